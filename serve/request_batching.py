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
from collections import deque
from collections.abc import Callable
from typing import Any


class AdaptiveBatcher:
    def __init__(self, fn: Callable[[list], list], max_batch_size: int, max_wait_s: float):
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("AdaptiveBatcher: max_batch_size >= 1 and max_wait_s >= 0")
        self.fn, self.max_batch_size, self.max_wait_s = fn, int(max_batch_size), float(max_wait_s)
        self.target = 1.0
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # the last batches, for inspection and tests
        self._queue: deque[tuple[Any, asyncio.Future]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def __call__(self, item):
        loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()
        future = loop.create_future()
        self._queue.append((item, future))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await future  # cancelling the caller cancels `future`; the worker then skips it

    def _live(self) -> int:
        while self._queue and self._queue[0][1].done():
            self._queue.popleft()
        return sum(not f.done() for _, f in self._queue)

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
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
            item, future = self._queue.popleft()
            if not future.done():
                batch.append((item, future))
        return batch

    async def _run(self) -> None:
        while self._live():
            batch = await self._collect()
            if not batch:
                continue
            size = len(batch)
            self.batch_sizes.append(size)
            self.target = float(size) if size >= self.target else max(1.0, self.target / 2)
            try:
                results = await asyncio.to_thread(self.fn, [item for item, _ in batch])
                if len(results) != size:
                    raise RuntimeError(f"batch function returned {len(results)} results for {size} items")
            except Exception as e:  # noqa: BLE001 - every caller of the batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)


class StreamBatcher:
    """Streams through an `AdaptiveBatcher`: `fn(items)` is a blocking iterator of (item index, event)
    pairs for a batch; each caller of `stream(item)` gets its own events as they come, until one for
    which `is_last(event)` holds. An error in the batch reaches every caller still streaming; a caller
    that leaves early stops reading (its row, if already decoding, runs to its end with the batch)."""

    def __init__(self, fn: Callable[[list], Any], max_batch_size: int, max_wait_s: float,
                 is_last: Callable[[Any], bool]):
        self.fn, self.is_last = fn, is_last
        self.batcher = AdaptiveBatcher(self._run_batch, max_batch_size, max_wait_s)

    def _run_batch(self, entries: list) -> list:  # in the worker thread
        open_ = set(range(len(entries)))

        def push(i, event):
            _, queue, loop = entries[i]
            loop.call_soon_threadsafe(queue.put_nowait, event)

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
