"""The service's one error type and the one table that gives each error code its HTTP status."""

from __future__ import annotations

import json
from pathlib import Path

# Every error the service answers, by its stable code: the one place a code gets its HTTP status.
ERRORS = {
    "bad_request": 400,  # not HTTP: a malformed request line or header (answered by the protocol)
    "invalid_json": 400,
    "rerank_unavailable": 400,
    "reload_failed": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_request": 422,
    "client_closed_request": 499,  # the client hung up before its request was read: nobody to answer
    "internal_error": 500,
    "answer_unavailable": 501,  # POST /answer on a server started without --generator-url
    "generator_failed": 502,  # the generator is unreachable, refused, or answered no chat completion
    "shutting_down": 503,
    "index_busy": 503,  # another process holds the index's writer lock (a compaction)
    "overloaded": 503,
    "generator_busy": 503,  # --generator-concurrency answers in progress, none done within --generator-timeout
    "generator_timeout": 504,
}


class ServiceError(Exception):
    """A request the service refuses: a stable error code (its HTTP status from ERRORS) and a
    one-line message that names the field or limit and no server path."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = ERRORS[code], code, message


def error_body(code: str, message: str) -> bytes:
    """The JSON body of every error answer."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def public_name(value) -> str | None:
    """What a client may see of a server path: its last part (a preset name stays as it is)."""
    return None if value is None else Path(str(value)).name or str(value)
