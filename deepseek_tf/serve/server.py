"""Running the app under uvicorn: a socket bound before anything loads (a busy port is a one-line
error), connections guarded against slow clients (`serve.protocol`), SIGHUP re-reads the index,
SIGTERM/SIGINT drain in-flight requests and the batcher's queue."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import resource
import signal
import socket
import sys
from typing import TYPE_CHECKING

from deepseek_tf.errors import UserError
from deepseek_tf.serve.app import Limits, create_app
from deepseek_tf.serve.limits import ConnectionLimits
from deepseek_tf.serve.protocol import guarded_protocol
from deepseek_tf.serve.service import SearchService

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("deepseek_tf.serve")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def configure_threads(threads: int = 0, intra_op_threads: int = 1, engine: str | None = None) -> None:
    """TensorFlow's thread pools for serving: `threads` model calls (and independent ops) at once
    (0: one per core), each op on `intra_op_threads` (0: all cores).

    One thread per op by default: a server runs several model calls at once (batch workers, or
    one per request without batching), and splitting a query batch's small matrix products
    across cores costs more in hand-offs than it saves (all-MiniLM-L6-v2 on 2 cores: one query
    5.7 ms with 1, 7.8 ms with 2; unbatched service at concurrency 32: 265 vs 190 QPS).
    TensorFlow fixes them when it first runs: in a process where it already has (a test, a host
    application) the pools it has stay, and the log says so. OpenVINO towers (`engine`) get the
    same split: `threads` calls at once, `intra_op_threads` threads each."""
    import tensorflow as tf

    from deepseek_tf.retrieval.engines import configure, default_threads

    configure(engine=engine, streams=threads or default_threads(), threads=intra_op_threads or default_threads())

    threading = tf.config.threading
    wanted = [
        (threading.get_intra_op_parallelism_threads, threading.set_intra_op_parallelism_threads, intra_op_threads),
        (threading.get_inter_op_parallelism_threads, threading.set_inter_op_parallelism_threads, threads),
    ]
    for get, set_, n in wanted:
        if n and get() != n:
            try:
                set_(n)
            except RuntimeError:
                log.warning("TensorFlow is already running: its thread pools stay as they are")


def _reload_on_sighup(service: SearchService) -> None:
    loop = asyncio.get_running_loop()

    async def reload():
        try:
            await loop.run_in_executor(None, service.reload, None)
        except Exception as e:  # the old index keeps serving; say why in the log
            log.error("reload on SIGHUP failed, still serving the previous index: %s", e)

    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload()))
    except (NotImplementedError, RuntimeError, AttributeError):  # not the main thread, or no SIGHUP here
        pass


def collect_and_freeze() -> None:
    """Collects what a replaced index left (its objects were frozen with the rest of the heap, out
    of the collector's reach), then freezes the heap again, new index included."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


# file descriptors kept for what is not a client connection (the serving process holds 12 at idle)
FD_RESERVE = 64


def accept_burst(limits: ConnectionLimits) -> int:
    """Connections accepted in one go (uvicorn's backlog): asyncio accepts up to this many before
    any of them runs, and a connection the cap closes frees its descriptor an iteration later, so
    about three bursts are open beyond the cap at any moment; the descriptors must hold them."""
    return min(2048, max(16, limits.max_connections // 8))


def fit_connections(limits: ConnectionLimits) -> ConnectionLimits:
    """LIMITS with max_connections lowered to fit the process's file-descriptor limit (raised to
    its hard limit first): past it, accept() fails, asyncio stops accepting for a second and logs
    a traceback per failure, and good clients wait."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + 3 * accept_burst(limits) + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
        if soft < wanted:
            fit = max(1, (soft - FD_RESERVE) * 8 // 11)  # fit + 3 * (fit // 8) + FD_RESERVE <= soft
            log.warning("%d open files allowed (ulimit -n): at most %d connections", soft, fit)
            return dataclasses.replace(limits, max_connections=fit)
    return limits


def uvicorn_server(
    app,
    connections: ConnectionLimits | None = None,
    drain_timeout: float = 30.0,
    access_log: bool = False,
    log_level: str = "warning",
) -> uvicorn.Server:
    """The uvicorn.Server for APP, its connections guarded against slow and hostile clients."""
    import uvicorn

    connections = connections or ConnectionLimits()
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=drain_timeout,
        timeout_keep_alive=connections.keep_alive,
        http=guarded_protocol(connections),
        backlog=accept_burst(connections),
    )
    return uvicorn.Server(config)


def run_server(
    service: SearchService,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    admin: bool = True,
    drain_timeout: float = 30.0,
    access_log: bool = False,
    log_level: str = "warning",
    connections: ConnectionLimits | None = None,
    api_key: str | None = None,
    index_root: str | None = None,
) -> int:
    """Serves until SIGTERM/SIGINT; returns once in-flight requests and queued encoder calls are done.
    `api_key`: what admin endpoints ask for; `index_root`: where /admin/reload may load from."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(message)s", stream=sys.stderr)
    sock = bind(host, port)

    async def _announce():
        _reload_on_sighup(service)
        actual = sock.getsockname()[1]
        d = service.describe()
        print(  # the operator's console: the full path
            f"serving {service.path} ({d['documents']} documents, {d['backend']}, model {d['model']} "
            f"on {service.engine}) on http://{host}:{actual}",
            file=sys.stderr,
            flush=True,
        )

    app = create_app(
        service,
        limits,
        admin=admin,
        on_startup=_announce,
        on_shutdown=service.close,
        api_key=api_key,
        index_root=index_root,
    )
    connections = fit_connections(connections or ConnectionLimits())
    # The loaded model and index are hundreds of thousands of long-lived objects; every full
    # garbage collection walks them all, a 250 ms pause in the middle of serving (p99 at
    # concurrency 32: 275-300 ms without, 60 ms with). Frozen, the collector skips them. Once a
    # reload's replaced index is let go, the heap is thawed, collected and frozen again: its
    # objects are freed at once (thawed alone, they waited for a rare full collection and memory
    # grew with every reload) and the new index's are frozen too.
    gc.collect()
    gc.freeze()
    service.on_retired = collect_and_freeze
    server = uvicorn_server(app, connections, drain_timeout, access_log, log_level)
    # uvicorn re-raises the stop signal once it has drained; with these handlers in place that
    # ends here, and a stop that finished its requests exits 0 instead of dying by the signal.
    stops = [s for s in (signal.SIGTERM, signal.SIGINT)]
    previous = {s: signal.signal(s, lambda *_: None) for s in stops}
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
