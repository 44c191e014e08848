"""serve.request_batching.AdaptiveBatcher without Ray: results reach their callers, batches follow the load."""
from __future__ import annotations

import asyncio
import time

import pytest

from liaotian.serve.request_batching import AdaptiveBatcher


def test_concurrent_calls_share_batches_and_get_their_own_results():
    seen = []

    def fn(items):
        seen.append(list(items))
        time.sleep(0.02)
        return [x * 10 for x in items]

    async def main():
        b = AdaptiveBatcher(fn, max_batch_size=8, max_wait_s=0.5)
        out = await asyncio.gather(*(b(i) for i in range(20)))
        return b, out

    b, out = asyncio.run(main())
    assert out == [i * 10 for i in range(20)]
    assert sorted(x for batch in seen for x in batch) == list(range(20))
    assert max(len(batch) for batch in seen) == 8 and len(seen) < 20
    assert list(b.batch_sizes) == [len(batch) for batch in seen]


def test_a_lone_caller_is_not_held_for_the_wait_and_the_target_follows_the_load():
    async def main():
        b = AdaptiveBatcher(lambda items: list(items), max_batch_size=32, max_wait_s=5.0)
        t0 = time.perf_counter()
        for i in range(3):
            assert await b(i) == i
        lone = time.perf_counter() - t0
        b.max_wait_s = 0.05  # below: each smaller batch after the burst may wait this long once
        await asyncio.gather(*(b(i) for i in range(16)))
        grown = b.target
        for i in range(6):  # back to one caller: the target halves after each smaller batch
            await b(i)
        return lone, grown, b.target

    lone, grown, after = asyncio.run(main())
    assert lone < 1.0  # three sequential calls, none waited the 5 s
    assert grown >= 2 and after == 1.0


def test_a_smaller_group_waits_for_the_recent_load():
    sizes = []

    def fn(items):
        sizes.append(len(items))
        return items

    async def main():
        b = AdaptiveBatcher(fn, max_batch_size=16, max_wait_s=1.0)
        await asyncio.gather(*(b(i) for i in range(8)))  # target 8

        async def late(i):
            await asyncio.sleep(0.05)
            return await b(i)
        # 3 callers now, 5 more 50 ms later: one batch of 8, not 3 then 5
        await asyncio.gather(*(b(i) for i in range(3)), *(late(i) for i in range(5)))

    asyncio.run(main())
    assert sizes == [8, 8]


def test_errors_reach_every_caller_and_cancelled_calls_are_skipped():
    calls = []

    def fn(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("boom")
        time.sleep(0.05)
        return items

    async def main():
        b = AdaptiveBatcher(fn, max_batch_size=4, max_wait_s=0.0)
        results = await asyncio.gather(b("bad"), return_exceptions=True)
        assert isinstance(results[0], ValueError)
        first = asyncio.ensure_future(b("a"))  # occupies the worker for 50 ms
        await asyncio.sleep(0.01)
        doomed = asyncio.ensure_future(b("gone"))
        kept = asyncio.ensure_future(b("kept"))
        await asyncio.sleep(0.01)
        doomed.cancel()
        assert await first == "a" and await kept == "kept"
        with pytest.raises(asyncio.CancelledError):
            await doomed

    asyncio.run(main())
    assert ["gone"] not in calls and all("gone" not in c for c in calls)


def test_stream_batcher_routes_each_callers_events_and_errors():
    from liaotian.serve.request_batching import StreamBatcher

    batches = []

    def fn(items):
        batches.append(list(items))
        if "bad" in items:
            yield 0, (items[0], 0, False)
            raise ValueError("boom")
        for step in range(3):
            for i, item in enumerate(items):
                if i == 0 and step == 2:
                    continue  # item 0 ended one step early
                yield i, (item, step, step == 2 or (i == 0 and step == 1))

    async def collect(b, item):
        return [e async for e in b.stream(item)]

    async def main():
        b = StreamBatcher(fn, max_batch_size=8, max_wait_s=0.2, is_last=lambda e: e[2])
        out = await asyncio.gather(*(collect(b, x) for x in "abcd"))
        with pytest.raises(ValueError):
            await collect(b, "bad")
        return out

    out = asyncio.run(main())
    assert out[0] == [("a", 0, False), ("a", 1, True)]
    assert out[3] == [("d", 0, False), ("d", 1, False), ("d", 2, True)]
    assert sorted(x for batch in batches[:-1] for x in batch) == list("abcd") and len(batches) < 5


def test_serial_decoder_frees_the_thread_when_a_consumer_leaves():
    from liaotian.serve.request_batching import SerialDecoder

    started: list[str] = []

    def slow_tokens(name):
        started.append(name)
        for i in range(1000):
            time.sleep(0.002)
            yield i

    async def main():
        decoder = SerialDecoder("t")
        first = decoder.iterate(lambda: slow_tokens("first"))
        assert await first.__anext__() == 0
        queued = asyncio.ensure_future(decoder.run(lambda: started.append("never") or 1))
        await asyncio.sleep(0.01)
        queued.cancel()  # a request that leaves while it waits never runs
        await first.aclose()  # the client left mid-stream: the thread stops at its next item
        t0 = time.monotonic()
        items = [x async for x in decoder.iterate(lambda: iter(range(3)))]
        assert items == [0, 1, 2] and time.monotonic() - t0 < 1.0
        assert await decoder.run(lambda: 7) == 7
        assert decoder.stalled_for() == 0.0 and decoder.queued == 0

    asyncio.run(main())
    assert started == ["first"]


def test_streaming_response_closes_its_generator_on_disconnect():
    from liaotian.serve.api import ClosingStreamingResponse

    async def main():
        state = {"closed": False}

        async def body():
            try:
                for i in range(100):
                    yield f"data: {i}\n\n"
                    await asyncio.sleep(0)
            finally:
                state["closed"] = True

        sent = []
        gate = asyncio.Event()

        async def send(message):
            sent.append(message)
            if len(sent) >= 3:
                gate.set()
                await asyncio.sleep(10)  # the client stops reading: send blocks

        async def receive():
            await gate.wait()
            return {"type": "http.disconnect"}

        scope = {"type": "http", "asgi": {"spec_version": "2.0"}}
        await asyncio.wait_for(ClosingStreamingResponse(body())(scope, receive, send), 5)
        return state["closed"]

    assert asyncio.run(main())
