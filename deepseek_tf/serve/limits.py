"""What one request and one connection may cost the service, declared once: `deepseek-tf serve`'s
flags take their defaults from here, and so do `create_app` and `run_server` when called directly.

Nothing here imports FastAPI or uvicorn, so the command line can be parsed without them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """Per-request limits, checked before any work is done."""

    max_k: int = 100
    max_query_chars: int = 1000
    max_body_bytes: int = 64 * 1024
    max_embed_texts: int = 64
    max_text_chars: int = 10000
    # Total characters of one /embed request. The document tower reads every text to its full
    # length, so a body of long texts is the most work one request can ask for; by default it is
    # bounded by a quarter of the body limit (16,384 characters for 64 KiB).
    max_embed_chars: int = field(default=0)
    # Nesting of arrays and objects in a body: the bodies served are two deep. The JSON parser
    # recurses once per level, so a 10,000-deep body would exhaust Python's stack.
    max_json_depth: int = 32

    def __post_init__(self) -> None:
        if self.max_embed_chars <= 0:
            object.__setattr__(self, "max_embed_chars", max(1, self.max_body_bytes // 4))


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection limits, enforced by the HTTP protocol (`serve.protocol`)."""

    # Seconds a client has to send one whole request (headers and body) from its first byte, and
    # a new connection to send its first byte; past it the connection is closed (408 when a
    # request had begun). Without it a client trickling a byte at a time holds a socket forever.
    read_timeout: float = 10.0
    # Seconds an idle keep-alive connection stays open between requests.
    keep_alive: float = 30.0
    # Open connections at most. Past it, the connection idle the longest (waiting for a request)
    # is closed to make room; when every connection has a request in progress, the new one is
    # refused with a 503. Keeps the server under its file-descriptor limit.
    max_connections: int = 1000


LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    import ipaddress

    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface
