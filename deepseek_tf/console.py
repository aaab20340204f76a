"""What a command shows a person: parsers whose `--help` ends with examples, and progress that
suits where the output goes (a bar on a terminal, plain lines in a log file)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import IO


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one `error:` line (exit 2), like every other bad input: argparse's own
    usage block would bury the message under a screenful of options."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        # --help and usage errors exit inside the parse, before TensorFlow is loaded
        parsed = super().parse_known_args(args, namespace)
        from deepseek_tf import load_tensorflow

        load_tensorflow()
        return parsed


def command_parser(command: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """The parser of `deepseek-tf COMMAND` (also `python -m deepseek_tf.COMMAND` where one exists)."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return _OneLineParser(
        prog=f"deepseek-tf {command}",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def number(
    kind: type = float, low: float | None = 0, high: float | None = None, low_open: bool = False
) -> Callable[[str], float]:
    """An argparse `type=` for a numeric flag: `kind` (int or float) within [low, high] (low excluded
    when `low_open`); NaN and infinities are refused, as nothing downstream is defined on them."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def is_terminal(stream: IO | None = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def format_eta(seconds: float) -> str:
    """Seconds as `1h02m`, `3m05s` or `42s`."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


# Longest a plain progress display stays silent on long work (a log reader must see it is alive).
MAX_SILENCE_S = 30.0


class PlainProgress:
    """One line every `every` steps (and at the last): `what step/total, rate, ETA`, no escape codes.

    For output that is not a terminal (CI, nohup, a file), where a redrawn bar would write
    carriage returns and ANSI sequences into the log.
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        every: int,
        stream: IO | None = None,
        clock=time.perf_counter,
        unit: str = "",
    ):
        self.what, self.total, self.every = what, total, max(1, every)
        self.stream, self.clock, self.unit = stream or sys.stderr, clock, unit
        self.start = self.last_line = clock()
        self.done = 0

    def line(self, step: int, extra: str = "") -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = step / elapsed
        total = f"/{self.total}" if self.total else ""
        eta = f", ETA {format_eta((self.total - step) / rate)}" if self.total and rate > 0 else ""
        extra = f", {extra}" if extra else ""
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.what} {step}{total}{extra}, {rate:.2f}{unit}/s{eta}"

    def update(self, step: int, extra: str = "") -> None:
        """A line every `every` steps, at the last, and whenever MAX_SILENCE_S passed without one."""
        self.done = step
        now = self.clock()
        due = step % self.every == 0 or (self.total and step == self.total)
        if due or now - self.last_line >= MAX_SILENCE_S:
            print(self.line(step, extra), file=self.stream, flush=True)
            self.last_line = now


def every_for(total: int | None, lines: int = 30) -> int:
    """The step interval that prints about `lines` lines over `total` steps."""
    return max(1, -(-(total or 0) // lines))


def progress(
    items,
    desc: str,
    unit: str = "it",
    total: int | None = None,
    leave: bool = True,
    stream: IO | None = None,
    lines: int = 20,
):
    """`items` with progress: a tqdm bar on a terminal, else about `lines` PlainProgress lines
    (`desc 40/200, 3.10 batch/s, ETA 52s`); `lines=0` shows nothing off a terminal."""
    stream = stream or sys.stderr
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(items, desc=desc, unit=unit, total=total, leave=leave, file=stream)
    if not lines:
        return items
    return _plain_iter(items, PlainProgress(desc, total, every_for(total, lines), stream, unit=unit))


def _plain_iter(items, bar: PlainProgress):
    for i, item in enumerate(items, 1):
        yield item
        bar.update(i)
