"""The Faust behaviours RT-QIS patches (rtqis/agents/patches.py), checked on the real classes (no broker
needed). Each patch's first test fails on stock Faust / mode; the refusal to flush while stopping is Faust's
own behaviour, kept."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from rtqis.agents import patches
from rtqis.agents.patches import (
    patch_commit_after_outputs,
    patch_consumer_highwaters,
    patch_fetch_with_no_active_partition,
    patch_flow_control_resume,
    patch_producer_buffer_flush,
    patch_seek_uncommitted_to_beginning,
    patch_table_manager_start,
    patch_worker_consumer_fetch_wait,
    seek_to_committed_or_beginning,
)
from rtqis.settings import Settings


def _app() -> faust.App:
    """A Faust app that is never started (the broker address is never dialled)."""
    return faust.App("rtqis-patch-test", broker="kafka://127.0.0.1:9", store="memory://")


@contextmanager
def _consumer_thread() -> Iterator[AIOKafkaConsumerThread]:
    """The worker consumer's thread service of a never-started app (its own event loop closed after)."""
    thread = _app().consumer._thread  # type: ignore[attr-defined]
    assert isinstance(thread, AIOKafkaConsumerThread)
    try:
        yield thread
    finally:
        thread.thread_loop.close()


def test_resume_while_flowing_keeps_queued_messages() -> None:
    """Faust resumes the flow once more when table recovery completes, while it is already flowing:
    the frames fetched meanwhile must stay queued for the agent (stock mode cleared them, and the
    worker skipped them: a count came back short after a restart)."""
    patch_flow_control_resume()

    async def go() -> tuple[list[str], list[str], bool]:
        flow = FlowControlEvent()  # starts suspended, as Faust's
        q: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
        q.put_nowait("before any resume")
        flow.resume()  # resume after a suspension: what was queued before it is stale
        after_first = list(q._queue)  # type: ignore[attr-defined]
        q.put_nowait("frame at offset 143")
        flow.resume()  # the resume at the end of recovery: already flowing
        kept = list(q._queue)  # type: ignore[attr-defined]
        flow.suspend()  # a rebalance
        flow.resume()
        return after_first, kept, q.empty() and flow.is_active()

    after_first, kept, cleared_after_suspension = asyncio.run(go())
    assert after_first == []
    assert kept == ["frame at offset 143"]
    assert cleared_after_suspension


def test_worker_consumer_takes_our_fetch_wait() -> None:
    """Faust builds its worker consumer with a 1,500 ms fetch wait whatever the settings say."""

    async def go(thread: AIOKafkaConsumerThread) -> tuple[int, int]:
        patch_worker_consumer_fetch_wait(7)
        first = thread._create_worker_consumer(thread.transport)
        patch_worker_consumer_fetch_wait(25)  # applied again: wraps Faust's method, not the last patch
        second = thread._create_worker_consumer(thread.transport)
        for c in (first, second):
            await c.stop()  # never started: only closes it
        return first._fetch_max_wait_ms, second._fetch_max_wait_ms

    with _consumer_thread() as thread:
        assert asyncio.run(go(thread)) == (7, 25)


class _Handover:
    """A channel whose publish waits for ``release`` (aiokafka waiting for room in its accumulator)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.published = 0

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await self.release.wait()
        self.published += 1


def test_producer_buffer_flush_waits_for_the_buffer_to_drain() -> None:
    """Faust's flush returned while a message was still being handed to aiokafka (not counted in the
    buffer's size) or after 100 ms without a send: offsets were then committed ahead of changelog
    records. Patched, it returns only when every message has been handed over."""
    patch_producer_buffer_flush()

    async def go() -> tuple[bool, int, float]:
        app = _app()
        buffer = app.producer.buffer
        await buffer.start()
        try:
            channel = _Handover()
            buffer.put(SimpleNamespace(message=SimpleNamespace(channel=channel)))  # type: ignore[arg-type]
            buffer.put(SimpleNamespace(message=SimpleNamespace(channel=channel)))  # type: ignore[arg-type]
            await asyncio.sleep(0.01)  # the first is in the hand-over, the second still queued
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            loop.call_later(0.3, channel.release.set)  # longer than Faust's 100 ms give-up
            flush = asyncio.ensure_future(buffer.flush())
            await asyncio.sleep(0.2)
            waiting = not flush.done()
            await asyncio.wait_for(flush, 5.0)
            return waiting, channel.published, loop.time() - t0
        finally:
            await buffer.stop()

    waiting, published, took = asyncio.run(go())
    assert waiting and published == 2 and took >= 0.3


class _Slow:
    """A channel whose every publish takes 2 ms (aiokafka busy under load)."""

    def __init__(self) -> None:
        self.published = 0

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(0.002)
        self.published += 1


def test_producer_buffer_flush_waits_for_what_was_put_before_it_not_for_an_empty_buffer() -> None:
    """An agent running flat out puts a changelog record at every event: the buffer is never empty. A
    flush that waited for an empty buffer never returned (Faust committed nothing until the input ran
    out); patched, it returns once the messages put before it are handed over."""
    patch_producer_buffer_flush()

    async def go() -> tuple[int, int, int]:
        app = _app()
        buffer = app.producer.buffer
        await buffer.start()
        channel = _Slow()
        stop = asyncio.Event()

        async def agent() -> None:  # a put every ~1 ms, faster than the 2 ms hand-overs
            while not stop.is_set():
                buffer.put(SimpleNamespace(message=SimpleNamespace(channel=channel)))  # type: ignore[arg-type]
                await asyncio.sleep(0.001)

        task = asyncio.ensure_future(agent())
        try:
            await asyncio.sleep(0.1)
            before = getattr(buffer, "_rtqis_put", 0)
            await asyncio.wait_for(buffer.flush(), 5.0)  # stock-patched (empty buffer): times out here
            return before, channel.published, buffer.size
        finally:
            stop.set()
            await task
            # drained, so that stopping does not refuse: every put handed over (an empty queue is not enough,
            # the last message taken off it may still be on its way to the channel: seen in CI)
            while getattr(buffer, "_rtqis_done", 0) < buffer._rtqis_put:
                await asyncio.sleep(0.01)
            await buffer.stop()

    before, published, left = asyncio.run(go())
    assert published >= before > 10 and left > 0  # all put before it handed over; the buffer not empty


def test_producer_buffer_flush_refuses_while_stopping() -> None:
    """A flush of a buffer that stops with messages in it raises (as Faust's does): no offset commit may
    follow it."""
    patch_producer_buffer_flush()

    async def go() -> None:
        app = _app()
        buffer = app.producer.buffer
        buffer.put(SimpleNamespace(message=SimpleNamespace(channel=_Handover())))  # type: ignore[arg-type]
        await buffer.flush()  # never started: not running

    with pytest.raises(RuntimeError, match="Cannot flush"):
        asyncio.run(go())


@pytest.fixture
def highwaters_undone() -> Iterator[None]:
    yield
    patch_consumer_highwaters(None)


def test_recovery_reads_changelogs_to_their_true_end(monkeypatch: pytest.MonkeyPatch, highwaters_undone: None) -> None:
    """The broker understates a changelog's end (base offset of the last batch + 1): recovery takes the
    true end from a fetch, the larger of the two, and the undo restores Faust's answer."""
    tp0, tp1 = TP("rtqis-candles-changelog", 0), TP("rtqis-candles-changelog", 1)
    asked: list[list[tuple[str, int]]] = []

    def true_end(settings: Settings, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        asked.append(keys)
        return {(tp0.topic, 0): 145, (tp1.topic, 1): 10}

    class Consumer:  # the aiokafka consumer's answer
        async def end_offsets(self, partitions: list[TP]) -> dict[TP, int]:
            return {tp0: 142, tp1: 12}

    monkeypatch.setattr(patches, "true_end_offsets", true_end)

    async def go(thread: AIOKafkaConsumerThread) -> tuple[Any, Any]:
        thread._consumer = Consumer()  # type: ignore[assignment]
        patch_consumer_highwaters(Settings())
        fixed = await thread._highwaters([tp0, tp1])
        patch_consumer_highwaters(None)
        return fixed, await thread._highwaters([tp0, tp1])

    with _consumer_thread() as thread:
        fixed, stock = asyncio.run(go(thread))
    assert fixed == {tp0: 145, tp1: 12}
    assert stock == {tp0: 142, tp1: 12}
    assert asked == [[(tp0.topic, 0), (tp1.topic, 1)]]  # asked once: only while patched


class _Fetcher:
    """aiokafka's Fetcher.fetched_records as it behaves: an empty (falsy) ``partitions`` returns every
    partition's prefetched records."""

    def __init__(self, records: dict[TP, list[int]]) -> None:
        self.records = records
        self.asked: list[set[TP]] = []
        self._closed = False
        self._subscriptions = SimpleNamespace(fetch_context=_nothing)

    async def fetched_records(self, partitions: set[TP], timeout: float = 0, max_records: int | None = None) -> Any:
        self.asked.append(partitions)
        return {tp: r for tp, r in self.records.items() if not partitions or tp in partitions}


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def test_a_fetch_with_no_active_partition_returns_nothing_and_takes_a_copy_of_the_set() -> None:
    """Stock Faust passes its live set: once a rebalance empties it, aiokafka returns every partition's
    records (which Faust then drops). Patched, an empty set fetches nothing, and a set emptied after the
    call was queued is seen empty when the thread runs."""
    stream, changelog = TP("ticks.trade", 2), TP("rtqis-candles-changelog", 0)
    fetcher = _Fetcher({stream: [0, 1, 2], changelog: [7]})
    consumer = SimpleNamespace(_fetcher=fetcher, _closed=False)

    async def fetch(thread: AIOKafkaConsumerThread, active: set[TP]) -> Any:
        return await thread._fetch_records(consumer, active, timeout=0.0)  # type: ignore[arg-type]

    with _consumer_thread() as thread:
        thread.consumer.flow_active = True  # type: ignore[misc]
        assert asyncio.run(fetch(thread, set())) == {stream: [0, 1, 2], changelog: [7]}  # stock: all of them
        patch_fetch_with_no_active_partition()
        patch_fetch_with_no_active_partition()  # idempotent
        fetcher.asked.clear()
        assert asyncio.run(fetch(thread, set())) == {}
        assert fetcher.asked == []
        active = {changelog}
        assert asyncio.run(fetch(thread, active)) == {changelog: [7]}
        assert fetcher.asked == [{changelog}] and fetcher.asked[0] is not active  # a copy


class _SeekConsumer:
    """aiokafka's consumer: committed offsets as its ``seek_to_committed`` returns them (None: no commit)."""

    def __init__(self, committed: dict[TP, int | None]) -> None:
        self.committed = committed
        self.to_beginning: list[TP] = []

    async def seek_to_committed(self) -> dict[TP, int | None]:
        return dict(self.committed)

    async def seek_to_beginning(self, *tps: TP) -> bool:
        self.to_beginning.extend(tps)
        return True


def test_partitions_without_a_committed_offset_are_sought_to_their_beginning() -> None:
    """aiokafka seeks only committed offsets above 0: a stream partition never committed (or at 0) is
    sought to its beginning too, so what a rebalance dropped is read again; changelogs are left to
    recovery. The patch replaces Faust's seek by that, once."""
    app = _app()
    app.Table("candles", default=dict)
    changelog = TP("rtqis-patch-test-candles-changelog", 0)
    done, never, zero = TP("ticks.trade", 0), TP("ticks.trade", 2), TP("pairs.legs", 1)
    consumer = _SeekConsumer({done: 21, never: None, zero: 0, changelog: None})
    try:
        got = asyncio.run(seek_to_committed_or_beginning(consumer, app.consumer))
    finally:
        app.consumer._thread.thread_loop.close()  # type: ignore[attr-defined]
    assert got == {done: 21, never: None, zero: 0, changelog: None}
    assert sorted(consumer.to_beginning) == sorted([never, zero])
    stock = AIOKafkaConsumerThread.seek_to_committed
    patch_seek_uncommitted_to_beginning()
    patched = AIOKafkaConsumerThread.seek_to_committed
    patch_seek_uncommitted_to_beginning()
    assert patched is not stock and AIOKafkaConsumerThread.seek_to_committed is patched


def test_table_manager_starts_without_its_fixed_one_second_sleep() -> None:
    """Stock Faust sleeps 1 s in ``TableManager.on_start`` before it registers the tables' changelog
    channels and starts recovery (every worker start paid it); patched, it does the same work without
    the sleep."""
    from faust.tables.manager import TableManager

    patch_table_manager_start()
    patch_table_manager_start()  # idempotent
    stock = TableManager._rtqis_original_on_start  # type: ignore[attr-defined]

    def run(on_start: Any) -> tuple[list[float], list[str]]:
        app = _app()
        app.Table("candles", default=dict)
        tm = app.tables
        slept: list[float] = []
        did: list[str] = []

        async def sleep(s: float) -> None:
            slept.append(s)

        async def update_channels() -> None:
            did.append("channels")

        async def recovery_start() -> None:
            did.append("recovery")

        tm.sleep = sleep  # type: ignore[method-assign]
        tm._update_channels = update_channels  # type: ignore[method-assign]
        tm._recovery = SimpleNamespace(start=recovery_start)  # type: ignore[assignment]
        try:
            asyncio.run(on_start(tm))
        finally:
            app.consumer._thread.thread_loop.close()  # type: ignore[attr-defined]
        return slept, did

    assert run(stock) == ([1.0], ["channels", "recovery"])
    assert run(TableManager.on_start) == ([], ["channels", "recovery"])


def test_offsets_are_committed_only_after_the_apps_outputs_are_delivered() -> None:
    """Faust flushes only its own producer before a commit; the worker's outputs (confluent-kafka) are
    awaited first through the app's ``outputs_delivered`` (apps without one commit as before)."""
    from faust.transport.consumer import Consumer

    patch_commit_after_outputs()
    patch_commit_after_outputs()  # idempotent
    events: list[str] = []

    async def original(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        events.append(f"commit {dict(offsets)}")
        return True

    async def outputs_delivered() -> None:
        await asyncio.sleep(0.01)
        events.append("outputs delivered")

    saved = Consumer._rtqis_original_commit_offsets  # type: ignore[attr-defined]
    Consumer._rtqis_original_commit_offsets = original  # type: ignore[attr-defined]  # Faust's, recorded
    tp = TP("ticks.trade", 0)

    async def run(app: Any) -> bool:
        return bool(await Consumer._commit_offsets(SimpleNamespace(app=app), {tp: 7}))  # type: ignore[arg-type]

    try:
        assert asyncio.run(run(SimpleNamespace(outputs_delivered=outputs_delivered))) is True
        assert events == ["outputs delivered", f"commit {{{tp!r}: 7}}"]
        events.clear()
        assert asyncio.run(run(SimpleNamespace())) is True  # an app without outputs: as before
        assert events == [f"commit {{{tp!r}: 7}}"]
    finally:
        Consumer._rtqis_original_commit_offsets = saved  # type: ignore[attr-defined]
