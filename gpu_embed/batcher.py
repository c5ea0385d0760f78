"""Micro-batching of concurrent embedding calls: :class:`MicroBatcher`.

Concurrent callers on an event loop are gathered into one batch, the batch is
computed off the loop in a single worker thread (the backend spreads it over
the cores itself: CUDA batches, ONNX lanes), and each caller gets its own rows.

Dispatch rule (per event loop, one dispatcher task):

* a lone request with an idle worker goes at once: the dispatcher yields to the
  loop for one tick (so callers woken in the same tick join it) and, seeing no
  newcomers, dispatches -- a lone request never waits for a window to fill;
* while arrivals keep coming tick after tick, it keeps gathering until the
  batch holds ``max_batch_size`` texts or the oldest caller has waited
  ``max_wait_ms``;
* while a batch is in flight, new callers queue up and form the next batch
  as soon as the worker is free (they have already waited at least that long).

The queue is bounded (``max_queue`` texts waiting): beyond it callers get
:class:`~semcache.errors.EmbedderOverloadedError` at once, so the proxy can
serve them uncached instead of piling up latency. A request larger than
``max_queue`` is still admitted into an empty queue (it could never run
otherwise); one larger than ``max_batch_size`` forms its own batch, which the
backend splits into chunks.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from semcache.errors import EmbedderError, EmbedderOverloadedError


@dataclass(eq=False)
class _Pending:
    texts: Sequence[str]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """Counters for tests, benchmarks and metrics."""

    batches: int = 0
    texts: int = 0
    largest_batch: int = 0
    rejected: int = 0


class _Front:
    """The per-event-loop side: queue, dispatcher task, futures."""

    def __init__(self, owner: MicroBatcher, loop: asyncio.AbstractEventLoop):
        self.owner = owner
        self.loop = loop
        self.queue: deque[_Pending] = deque()
        self.queued_texts = 0
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def submit(self, texts: Sequence[str]) -> np.ndarray:
        owner = self.owner
        if self.queued_texts and self.queued_texts + len(texts) > owner.max_queue:
            owner.stats.rejected += 1
            raise EmbedderOverloadedError(
                f"embedding queue full ({self.queued_texts} texts waiting, "
                f"max_queue={owner.max_queue})"
            )
        pending = _Pending(texts, self.loop.create_future())
        self.queue.append(pending)
        self.queued_texts += len(texts)
        self.wakeup.set()
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._dispatch(), name="gpu-embed-dispatch")
        return await pending.future

    def _take(self) -> list[_Pending]:
        """Pop up to ``max_batch_size`` texts' worth of live callers (at least one)."""
        batch: list[_Pending] = []
        size = 0
        while self.queue:
            head = self.queue[0]
            if batch and size + len(head.texts) > self.owner.max_batch_size:
                break
            self.queue.popleft()
            self.queued_texts -= len(head.texts)
            if head.future.done():  # the caller was cancelled while waiting
                continue
            batch.append(head)
            size += len(head.texts)
        return batch

    async def _gather(self) -> None:
        deadline = self.queue[0].enqueued + self.owner.max_wait_s
        seen = -1
        while self.queued_texts < self.owner.max_batch_size and len(self.queue) != seen:
            seen = len(self.queue)
            await asyncio.sleep(0)  # let callers woken in this tick enqueue
            if time.monotonic() >= deadline:
                break

    async def _dispatch(self) -> None:
        owner = self.owner
        batch: list[_Pending] = []
        try:
            while True:
                while not self.queue:
                    self.wakeup.clear()
                    await self.wakeup.wait()
                await self._gather()
                batch = self._take()
                if not batch:
                    continue
                texts = [t for p in batch for t in p.texts]
                try:
                    rows = await self.loop.run_in_executor(owner.executor, owner.run, texts)
                    if rows.shape[0] != len(texts):
                        raise EmbedderError(f"backend returned {rows.shape[0]} rows for {len(texts)} texts")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    _fail(batch, exc)
                    batch = []
                    continue
                owner.stats.batches += 1
                owner.stats.texts += len(texts)
                owner.stats.largest_batch = max(owner.stats.largest_batch, len(texts))
                offset = 0
                for p in batch:
                    n = len(p.texts)
                    if not p.future.done():
                        p.future.set_result(rows[offset : offset + n])
                    offset += n
                batch = []
        except asyncio.CancelledError:
            _fail(batch + list(self.queue), EmbedderError("embedder closed"))
            self.queue.clear()
            self.queued_texts = 0
            raise


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    message = str(exc) if isinstance(exc, EmbedderError) else f"embedding failed: {exc!r}"
    kind = type(exc) if isinstance(exc, EmbedderError) else EmbedderError
    for p in batch:
        if not p.future.done():
            err = kind(message)  # one instance per caller: tracebacks must not be shared
            err.__cause__ = exc
            p.future.set_exception(err)


class MicroBatcher:
    """Gathers concurrent ``submit`` calls into batches for ``run`` (a sync function)."""

    def __init__(self, run: Callable[[list[str]], np.ndarray], *, max_batch_size: int = 64,
                 max_wait_ms: float = 1.0, max_queue: int = 1024):
        self.run = run
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu-embed")
        self.stats = BatchStats()
        self._fronts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Front] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._closed = False

    async def submit(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` as part of a batch; returns their rows in order."""
        if self._closed:
            raise EmbedderError("embedder closed")
        if not texts:
            raise ValueError("submit() needs at least one text")
        loop = asyncio.get_running_loop()
        with self._lock:
            front = self._fronts.get(loop)
            if front is None:
                front = self._fronts[loop] = _Front(self, loop)
        return await front.submit(texts)

    async def aclose(self) -> None:
        """Fail waiting callers, stop the dispatchers, wait for the running batch."""
        if self._closed:
            return
        self._closed = True
        current = asyncio.get_running_loop()
        with self._lock:
            fronts = list(self._fronts.items())
        for loop, front in fronts:
            task = front.task
            if task is None or task.done():
                continue
            if loop is current:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
        await asyncio.to_thread(self.executor.shutdown, True)
