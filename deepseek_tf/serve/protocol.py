"""uvicorn's h11 HTTP/1.1 protocol with what it lacks against slow and hostile clients.

uvicorn times out only idle keep-alive connections: a client that connects and sends nothing, or
trickles its headers or body a byte at a time, holds its socket for as long as it likes, and a
few thousand of them exhaust the server's file descriptors. `GuardedH11Protocol` adds:

- a read deadline: a request must arrive whole (headers and body) within `read_timeout` seconds
  of its first byte, and a new connection must send its first request within `read_timeout`;
  past it the client gets a 408 (when a request had begun) and the connection is closed;
- a connection cap: past `max_connections` open connections, the one waiting longest for a
  request is closed to make room (slow clients are the ones waiting), and when every connection
  has a request in progress the new one gets a 503 and is closed;
- JSON bodies for the errors that uvicorn answers itself (a malformed request line or header,
  e.g. `Content-Length: -1`), with the codes and shape of the app's errors.

Every connection closed here is logged as one line, never as an error with a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from deepseek_tf.serve.limits import ConnectionLimits
from deepseek_tf.serve.service import ERRORS, error_body

log = logging.getLogger("deepseek_tf.serve")


def raw_error(code: str, message: str) -> bytes:
    """A whole HTTP/1.1 error answer that closes the connection, for a connection on which h11 is
    in no state to frame one (no request yet, or one being abandoned)."""
    body = error_body(code, message)
    status = ERRORS[code]
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    def __init__(self, config, server_state, app_state, _loop=None, limits: ConnectionLimits | None = None):
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits or ConnectionLimits()
        self._deadline: asyncio.TimerHandle | None = None
        # since when the connection has been waiting for a request (None while one is answered):
        # the connection waiting longest is the one closed when the cap is reached
        self.waiting_since: float | None = time.monotonic()

    # -- the read deadline
    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.limits.read_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            return  # the request was read far enough to be answered: the answer is on its way
        begun = self.conn.their_state is h11.SEND_BODY or bool(self.conn.trailing_data[0])
        if cycle is not None and not cycle.response_complete:
            # the app waits for the rest of the body: it now hears that the client is gone, and
            # what it answers is dropped (the 408 below is the answer)
            cycle.disconnected = True
            cycle.message_event.set()
        if begun:
            seconds = f"{self.limits.read_timeout:g}"
            self.transport.write(raw_error("request_timeout", f"the request did not arrive within {seconds} s"))
        log.info("%s: no whole request within %g s, connection closed", _peer(self.client), self.limits.read_timeout)
        self.transport.close()

    # -- the connection cap
    def _make_room(self) -> None:
        # a connection closed a moment ago stays in the set until its loss is reported: not counted
        others = [c for c in self.connections if c is not self and not c.transport.is_closing()]
        if len(others) < self.limits.max_connections:
            return
        waiting = [c for c in others if getattr(c, "waiting_since", None) is not None]
        if waiting:
            oldest = min(waiting, key=lambda c: c.waiting_since)
            log.info("%s: closed to make room (%d connections open)", _peer(oldest.client), len(others) + 1)
            oldest.transport.close()
        else:
            log.warning("refused a connection: %d open, all busy (--max-connections)", len(others))
            self.transport.write(raw_error("overloaded", "the server is at its connection limit; try again"))
            self.transport.close()

    # -- uvicorn's protocol, extended
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            self._disarm()
            return
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._arm()  # part of a request is here: the rest has until the deadline
        else:
            self._disarm()  # the request is whole
        if self.cycle is not None and not self.cycle.response_complete:
            self.waiting_since = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.waiting_since = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.waiting_since = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own answer is text/plain; this one has the app's JSON error shape
        self._disarm()
        self.transport.write(raw_error("bad_request", "not a valid HTTP/1.1 request"))
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


def guarded_protocol(limits: ConnectionLimits) -> functools.partial:
    """The `http=` argument of uvicorn.Config for a server with these limits."""
    return functools.partial(GuardedH11Protocol, limits=limits)
