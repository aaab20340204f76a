"""What a command shows a person: parsers whose `--help` ends with examples, and progress that
suits where the output goes (a bar on a terminal, plain lines in a log file)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO


def command_parser(command: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """The parser of `deepseek-tf COMMAND` (also `python -m deepseek_tf.COMMAND` where one exists)."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return argparse.ArgumentParser(
        prog=f"deepseek-tf {command}",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def is_terminal(stream: IO | None = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def format_eta(seconds: float) -> str:
    """Seconds as `1h02m`, `3m05s` or `42s`."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


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
        self.start = clock()
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
        self.done = step
        if step % self.every == 0 or (self.total and step == self.total):
            print(self.line(step, extra), file=self.stream, flush=True)


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
