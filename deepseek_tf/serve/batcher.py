"""Micro-batching: work items from concurrent requests (query texts for the encoder, query
vectors for the dense search) gathered into one call.

A worker thread blocks for the first queued item, then takes whatever else arrives within
`max_wait_ms` (up to `max_batch` items), runs them in one call and resolves each request's
future with its row. With `workers` > 1, several workers take batches from the one queue, so
one batch is gathered and run while another is still in its call (a model call of a small
batch leaves cores idle in its serial parts). While a call runs, new requests queue up, so
under load batches fill without waiting. The wait is only taken when the previous batch held
more than one item: a lone caller (concurrency 1) never waits for company that is not coming.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

_STOP = object()


class BatcherClosed(RuntimeError):
    """Raised by `submit` once `close` was called."""


class MicroBatcher:
    """`submit(item) -> Future[row]`; `fn(list[item]) -> rows` (an array or list, one row per
    item, in order) runs on one worker thread. With `dedupe` (hashable items, e.g. texts) an
    item queued twice in one batch is computed once.

    `on_batch(size, seconds)` is told about every call (the service's batch-size histograms).
    `close()` lets the worker finish everything queued before it, then stops it.
    """

    def __init__(
        self,
        fn: Callable[[list], Sequence],
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "micro-batcher",
        dedupe: bool = True,
        workers: int = 1,
    ):
        if max_batch < 1 or workers < 1:
            raise ValueError("max_batch and workers must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.on_batch, self.dedupe = on_batch, dedupe
        self.calls = 0
        self._last_size = 1
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, item) -> Future:
        future: Future = Future()
        with self._lock:  # an item queued after the stop marker would never be answered
            if self._closed:
                raise BatcherClosed("the model worker has stopped")
            self._queue.put((item, future))
        return future

    def close(self, wait: bool = True, timeout: float | None = None) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                for _ in self._threads:  # one marker per worker, behind everything queued before
                    self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(timeout)

    def _gather(self) -> tuple[list, bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        wait = self.max_wait if self._last_size > 1 else 0.0
        batch, deadline = [first], time.monotonic() + wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._gather()
            self._last_size = max(1, len(batch))
            live = [(t, f) for t, f in batch if f.set_running_or_notify_cancel()]
            if live:
                self._call(live)

    def _call(self, batch: list[tuple[object, Future]]) -> None:
        # A text asked for twice in one batch (popular queries under load) is encoded once.
        unique = list(dict.fromkeys(t for t, _ in batch)) if self.dedupe else [t for t, _ in batch]
        start = time.perf_counter()
        try:
            rows = self.fn(unique)
            if len(rows) != len(unique):
                raise RuntimeError(f"batch call returned {len(rows)} rows for {len(unique)} items")
        except BaseException as e:  # every waiting request learns of the failure; the worker lives on
            for _, f in batch:
                f.set_exception(e)
            return
        finally:
            with self._lock:
                self.calls += 1
        seconds = time.perf_counter() - start
        if self.dedupe:
            row = {t: i for i, t in enumerate(unique)}
            for t, f in batch:
                f.set_result(rows[row[t]])
        else:
            for (_, f), result in zip(batch, rows):
                f.set_result(result)
        if self.on_batch is not None:
            self.on_batch(len(unique), seconds)
