"""User-facing errors and the wrapper that turns them into one-line CLI failures."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


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
