"""The API key that admin and write endpoints ask for: read from `--api-key-file` or the
DEEPSEEK_TF_API_KEY environment variable, sent by clients as `Authorization: Bearer KEY`."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from deepseek_tf.errors import UserError

API_KEY_ENV = "DEEPSEEK_TF_API_KEY"
MIN_KEY_CHARS = 16


def load_api_key(path: str | Path | None = None, environ: dict | None = None) -> str | None:
    """The key from PATH (its first line), else from DEEPSEEK_TF_API_KEY, else None.
    A key shorter than MIN_KEY_CHARS is refused: it could be guessed."""
    environ = os.environ if environ is None else environ
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--api-key-file {path}: cannot read it ({getattr(e, 'strerror', None) or e})", 2) from None
        key, source = (lines[0].strip() if lines else ""), f"--api-key-file {path}"
    elif environ.get(API_KEY_ENV):
        key, source = environ[API_KEY_ENV].strip(), API_KEY_ENV
    else:
        return None
    if len(key) < MIN_KEY_CHARS:
        raise UserError(f"{source}: the API key must be at least {MIN_KEY_CHARS} characters", exit_code=2)
    return key


def bearer_matches(authorization: str | None, key: str) -> bool:
    """True when an `Authorization: Bearer ...` header carries KEY (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), key.encode("utf-8"))
