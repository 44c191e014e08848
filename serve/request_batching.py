"""Request batching for the Serve deployments: concurrent calls become one call of a blocking batch
function, run in a worker thread, one batch at a time. No Ray here (tested without a cluster).

Why not `@serve.batch` as is: it starts a batch when `max_batch_size` requests are there or when
`batch_wait_timeout_s` has passed since the first one. Under a closed loop of c clients (c=32 at
`max_batch_size` 32) the replies of one batch come back as new requests spread over tens of ms, so
a short timeout splits the clients into groups that take turns (measured: batches of 1-10 instead of
32, half the throughput), while a long one delays every lone request by the whole timeout.

`AdaptiveBatcher` waits for the *recent load* instead: a batch starts as soon as it holds as many
requests as the largest recent batch (`target`), or `max_batch_size`, or when `max_wait_s` has passed
since collection began. `target` follows the load: it rises at once to any larger batch and halves
after each smaller one. A lone client (target 1) is never delayed; 32 clients that split into groups
are merged again within a batch or two, at the cost of at most `max_wait_s` once.
Cancelled calls (client gone, request timeout) are dropped before their batch starts.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class AdaptiveBatcher:
    def __init__(self, fn: Callable[[list], list], max_batch_size: int, max_wait_s: float,
                 on_batch: Callable[[int, list[float]], None] | None = None):
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("AdaptiveBatcher: max_batch_size >= 1 and max_wait_s >= 0")
        self.fn, self.max_batch_size, self.max_wait_s = fn, int(max_batch_size), float(max_wait_s)
        self.on_batch = on_batch  # told each batch's size and its requests' queue waits (s), for metrics
        self.target = 1.0
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # the last batches, for inspection and tests
        self.busy_since: float | None = None  # while a batch runs: when it started (health check)
        self.last_progress: float | None = None  # StreamBatcher moves it on with every event
        self._queue: deque[tuple[Any, asyncio.Future, float]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def __call__(self, item):
        loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()
        future = loop.create_future()
        self._queue.append((item, future, time.monotonic()))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await future  # cancelling the caller cancels `future`; the worker then skips it

    def _live(self) -> int:
        while self._queue and self._queue[0][1].done():
            self._queue.popleft()
        return sum(not f.done() for _, f, _ in self._queue)

    def stalled_for(self) -> float:
        """Seconds the running batch has gone without progress (0 when idle)."""
        last = self.last_progress
        return 0.0 if self.busy_since is None or last is None else time.monotonic() - last

    async def _collect(self) -> list[tuple[Any, asyncio.Future, float]]:
        loop = asyncio.get_running_loop()
        want = min(self.max_batch_size, max(1, round(self.target)))
        deadline = loop.time() + self.max_wait_s
        while self._live() < want:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch = []
        while self._queue and len(batch) < self.max_batch_size:
            entry = self._queue.popleft()
            if not entry[1].done():
                batch.append(entry)
        return batch

    async def _run(self) -> None:
        while self._live():
            batch = await self._collect()
            if not batch:
                continue
            size = len(batch)
            self.batch_sizes.append(size)
            self.target = float(size) if size >= self.target else max(1.0, self.target / 2)
            self.busy_since = self.last_progress = now = time.monotonic()
            if self.on_batch is not None:
                self.on_batch(size, [now - queued for _, _, queued in batch])
            try:
                results = await asyncio.to_thread(self.fn, [item for item, _, _ in batch])
                if len(results) != size:
                    raise RuntimeError(f"batch function returned {len(results)} results for {size} items")
            except Exception as e:  # noqa: BLE001 - every caller of the batch gets the error
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            finally:
                self.busy_since = None
            for (_, future, _), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)


class StreamBatcher:
    """Streams through an `AdaptiveBatcher`: `fn(items)` is a blocking iterator of (item index, event)
    pairs for a batch; each caller of `stream(item)` gets its own events as they come, until one for
    which `is_last(event)` holds. An error in the batch reaches every caller still streaming; a caller
    that leaves early stops reading (its row, if already decoding, runs to its end with the batch)."""

    def __init__(self, fn: Callable[[list], Any], max_batch_size: int, max_wait_s: float,
                 is_last: Callable[[Any], bool], on_batch: Callable[[int, list[float]], None] | None = None):
        self.fn, self.is_last = fn, is_last
        self.batcher = AdaptiveBatcher(self._run_batch, max_batch_size, max_wait_s, on_batch)

    def _run_batch(self, entries: list) -> list:  # in the worker thread
        open_ = set(range(len(entries)))

        def push(i, event):
            _, queue, loop = entries[i]
            self.batcher.last_progress = time.monotonic()
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                pass

        try:
            for i, event in self.fn([item for item, _, _ in entries]):
                if i in open_:
                    push(i, event)
                    if self.is_last(event):
                        open_.discard(i)
            if open_:
                raise RuntimeError("the batch ended before every stream had its last event")
        except BaseException as e:  # noqa: BLE001 - delivered to each open stream, then re-raised
            for i in open_:
                push(i, e)
            raise
        return [None] * len(entries)

    async def stream(self, item):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        task = asyncio.ensure_future(self.batcher((item, queue, loop)))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved here; callers get it via the queue
        try:
            while True:
                event = await queue.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if self.is_last(event):
                    break
        finally:
            if not task.done():
                task.cancel()  # not started yet: dropped from its batch


class SerialDecoder:
    """Blocking jobs one at a time on a dedicated thread: the path for requests that are not batched
    (batching off, streams with n > 1 or reranking).

    Why not an `asyncio.Lock` held around the decode: a streaming request holds it across `yield`s,
    and a client that disconnects while its stream is suspended at a `yield` leaves the generator
    (and the lock) alive until something closes it; a replica then waited forever on a lock no live
    request held. Here nothing on the event loop holds anything: a job waits in the thread's queue,
    a consumer that leaves sets its stop flag (a queued job then never starts; a running stream
    ends at its next item), and the thread is free again at once.

    `busy_since` / `last_progress` (monotonic seconds, None when idle) feed the replica's health
    check: a job that makes no progress for longer than a request may take means the replica
    cannot serve. `on_wait(seconds)` (optional) is told how long each job waited in the queue."""

    def __init__(self, name: str = "decode", on_wait: Callable[[float], None] | None = None):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.on_wait = on_wait
        self.busy_since: float | None = None
        self.last_progress: float | None = None
        self.queued = 0

    def _started(self, submitted: float) -> None:
        self.queued -= 1
        now = time.monotonic()
        self.busy_since = self.last_progress = now
        if self.on_wait is not None:
            self.on_wait(now - submitted)

    def stalled_for(self) -> float:
        """Seconds the running job has gone without progress (0 when idle)."""
        last = self.last_progress
        return 0.0 if self.busy_since is None or last is None else time.monotonic() - last

    async def run(self, fn: Callable, *args):
        """`fn(*args)` on the decoder thread; cancelling the caller drops a job that has not started."""
        submitted = time.monotonic()

        def job():
            self._started(submitted)
            try:
                return fn(*args)
            finally:
                self.busy_since = None

        self.queued += 1
        future = self._pool.submit(job)
        try:
            return await asyncio.wrap_future(future)
        finally:
            if future.cancel():  # never started: its queue slot is given back here
                self.queued -= 1

    async def iterate(self, make_iter: Callable[[], Any]):
        """Items of the blocking iterator `make_iter()`, produced on the decoder thread. Closing this
        generator (client gone, timeout) stops the job at its next item, or before it starts."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop, end = threading.Event(), object()
        submitted = time.monotonic()

        def deliver(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                stop.set()

        def job():
            self._started(submitted)
            try:
                if stop.is_set():
                    return
                items = make_iter()
                try:
                    for item in items:
                        self.last_progress = time.monotonic()
                        if stop.is_set():
                            break
                        deliver(item)
                finally:
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
            except BaseException as e:  # noqa: BLE001 - re-raised on the event loop's side
                deliver(e)
            finally:
                self.busy_since = None
                deliver(end)

        self.queued += 1
        future = self._pool.submit(job)
        try:
            while True:
                item = await queue.get()
                if item is end:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            if future.cancel():
                self.queued -= 1
