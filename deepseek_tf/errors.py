"""User-facing errors and the wrapper that turns them into one-line CLI failures."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path


class UserError(Exception):
    """Bad input from the user: printed as one line, no traceback.

    `exit_code` follows the SPEC: 2 for configuration/usage errors, 1 for bad data
    or failed checks.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(UserError):
    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


def refuse_aliasing(output_flag: str, outputs: Iterable[str | Path], inputs: dict[str, Iterable[str | Path]]) -> None:
    """Before anything is written: no output may be, hold or sit inside an input.

    `outputs`: the paths the command will write (a directory counts as everything under it);
    `inputs`: {flag: paths read through it}. Paths are resolved, so a symlink or `..` is no way around.
    """
    for out in outputs:
        o = Path(out).resolve()
        for flag, paths in inputs.items():
            for inp in paths:
                i = Path(inp).resolve()
                if o == i or i in o.parents or o in i.parents:
                    how = "is" if o == i else "lies inside" if i in o.parents else "holds"
                    raise UserError(
                        f"{output_flag} {out} {how} {flag} {inp}: an output may not overwrite an input; "
                        f"nothing written (choose another {output_flag})"
                    )


def cli_entry(fn: Callable[..., int | None]) -> Callable[..., int]:
    """Runs a CLI `main`, mapping UserError (and Ctrl-C) to a one-line message + exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> int:
        try:
            return fn(*args, **kwargs) or 0
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
        except OSError as e:  # a path the user gave that cannot be read or written: their input, not a bug
            where = f"{e.filename}: " if e.filename else ""
            print(f"error: {where}{e.strerror or e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130

    return wrapper
