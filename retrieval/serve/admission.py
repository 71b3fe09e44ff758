"""Admission control of ``braid serve``: a bounded pool of search threads, load shedding, and the
deadline that stops a request's work.

At most ``capacity = max_concurrency + queue_size`` searches are admitted at once; beyond that
:class:`Overloaded` (503). Each admitted search gets a :class:`Deadline` ``timeout_s`` after its
admission. When it passes, or the client leaves, the request is answered (504, or nothing) and the
deadline is cancelled: a search still queued is dropped before it starts, and a running one stops
at its next :meth:`Deadline.check` (the service checks between groups of queries of a batch and
between the hits of each answer it encodes). What runs between two checks (one group's retrieval
inside tantivy, Numba, FAISS or torch) cannot be interrupted; its thread keeps the slot until it
returns, so a stuck backend shows up as 503s, not as a growing pile of threads.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Awaitable, Callable


class Overloaded(Exception):
    """More searches than ``capacity`` are admitted."""


class SearchTimeout(Exception):
    """A search was not answered within ``timeout_s``."""


class ClientGone(Exception):
    """The client disconnected before its search was answered."""


class Cancelled(Exception):
    """Raised inside a search at a :meth:`Deadline.check` once its deadline passed or was cancelled."""


class Deadline:
    """When one request's work must stop: ``timeout_s`` after it was admitted, or as soon as
    :meth:`cancel` is called (timeout answered, client gone). Read from the search thread."""

    def __init__(self, timeout_s: float):
        self.at = time.monotonic() + timeout_s
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def expired(self) -> bool:
        return self._cancelled or time.monotonic() >= self.at

    def check(self) -> None:
        """Raise :class:`Cancelled` when the work should stop."""
        if self.expired():
            raise Cancelled()


class Admission:
    """Runs blocking search work in a bounded pool; sheds load beyond ``capacity``.

    ``in_flight`` counts admitted searches until their work has really finished (or was dropped
    before starting), so a slot is only freed when its thread is. Counters (for ``/health``):
    ``served``, ``rejected`` (503), ``timed_out`` (504), ``abandoned`` (client gone while queued or
    running), ``stopped`` (work stopped at a deadline check before it was done).
    """

    def __init__(self, config):
        self.config = config
        self._lock = threading.Lock()
        self._in_flight = 0
        self.served = 0
        self.rejected = 0
        self.timed_out = 0
        self.abandoned = 0
        self.stopped = 0
        self._executor: ThreadPoolExecutor | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def full(self) -> bool:
        return self._in_flight >= self.config.capacity

    def overloaded_message(self) -> str:
        return f"overloaded: {self.config.capacity} searches are already running or queued; retry later"

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.config.max_concurrency, thread_name_prefix="braid-search")
        return self._executor

    def _release(self, fut: Future) -> None:
        with self._lock:
            self._in_flight -= 1
            if not fut.cancelled() and isinstance(fut.exception(), Cancelled):
                self.stopped += 1

    async def run(self, fn: Callable[[Deadline], Any], gone: Callable[[], Awaitable[None]] | None = None) -> Any:
        """``fn(deadline)`` in a worker thread; Overloaded when full, SearchTimeout after ``timeout_s``.

        ``gone``: an awaitable factory that returns when the client has disconnected; the search is
        then dropped (ClientGone), so abandoned requests do not hold the queue.
        """
        import asyncio

        with self._lock:
            if self._in_flight >= self.config.capacity:
                self.rejected += 1
                raise Overloaded()
            self._in_flight += 1
        deadline = Deadline(self.config.timeout_s)
        try:
            fut = self._pool().submit(fn, deadline)
        except BaseException:
            with self._lock:
                self._in_flight -= 1
            raise
        fut.add_done_callback(self._release)
        # Cancelling the wrapper cancels ``fut`` if it has not started yet; a running search
        # stops at its next deadline check (and keeps its slot until then).
        work = asyncio.wrap_future(fut)
        watcher = asyncio.ensure_future(gone()) if gone is not None else None
        try:
            waiting = {work} if watcher is None else {work, watcher}
            done, _ = await asyncio.wait(waiting, timeout=self.config.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the request task itself was cancelled (server shutting down)
            deadline.cancel()
            work.cancel()
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        if work not in done:
            deadline.cancel()
            work.cancel()
            if watcher is not None and watcher in done:
                self.abandoned += 1
                raise ClientGone()
            self.timed_out += 1
            raise SearchTimeout()
        try:
            result = work.result()
        except Cancelled:  # the thread saw the deadline pass just before the loop did
            self.timed_out += 1
            raise SearchTimeout() from None
        self.served += 1
        return result

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
