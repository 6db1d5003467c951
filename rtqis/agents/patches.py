"""The eight changes RT-QIS makes to Faust (faust-streaming 0.15) and mode, each named after what it patches.

Each fixes a loss or a stall measured on the embedded broker (bench/README.md); each is idempotent (applying
it twice patches once) and is checked on the real classes in tests/test_faust_patches.py:

- :func:`patch_worker_consumer_fetch_wait`: the consumer's fetch wait (Faust hard-codes 1,500 ms);
- :func:`patch_flow_control_resume`: frames were dropped from an agent's queue when table recovery ended;
- :func:`patch_producer_buffer_flush`: offsets were committed before the table changelog was sent;
- :func:`patch_consumer_highwaters`: table recovery stopped short of a changelog's true end;
- :func:`patch_fetch_with_no_active_partition`: a fetch with no active partition returned every partition's
  records, which Faust then dropped;
- :func:`patch_seek_uncommitted_to_beginning`: a partition without a committed offset never re-read what
  was dropped, and stalled for good (seen on Apache Kafka with two workers, one SIGKILLed);
- :func:`patch_table_manager_start`: every worker start waited a fixed second for tables to register;
- :func:`patch_commit_after_outputs`: input offsets were committed before the outputs they produced had
  left the worker's output producer.

:func:`apply_patches` applies them as the worker's settings ask.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.tables.manager import TableManager
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from mode.utils.queues import FlowControlEvent

from rtqis.kafka.offsets import true_end_offsets
from rtqis.settings import Settings

__all__ = [
    "apply_patches",
    "patch_commit_after_outputs",
    "patch_consumer_highwaters",
    "patch_fetch_with_no_active_partition",
    "patch_flow_control_resume",
    "patch_producer_buffer_flush",
    "patch_seek_uncommitted_to_beginning",
    "patch_table_manager_start",
    "patch_worker_consumer_fetch_wait",
]

log = logging.getLogger(__name__)


def apply_patches(settings: Settings, recovery_fix: str) -> None:
    """Every patch, for a worker with ``settings`` and the decided ``recovery_fix`` (see
    :func:`rtqis.agents.config.recovery_fix`): the changelog end offsets are corrected only with
    ``"end-offsets"`` (and the correction is undone otherwise)."""
    patch_worker_consumer_fetch_wait(settings.fetch_max_wait_ms)
    patch_flow_control_resume()
    patch_producer_buffer_flush()
    patch_consumer_highwaters(settings if recovery_fix == "end-offsets" else None)
    patch_fetch_with_no_active_partition()
    patch_seek_uncommitted_to_beginning()
    patch_table_manager_start()
    patch_commit_after_outputs()


def patch_commit_after_outputs() -> None:
    """Make Faust's ``Consumer._commit_offsets`` first await the app's ``outputs_delivered()`` (when it
    has one: :class:`rtqis.agents.worker.RtqisApp`), which returns once every output sent so far has its
    delivery report (:meth:`rtqis.agents.outputs.Outputs.delivered`).

    Faust flushes its own producer (the changelogs) before a commit; the outputs go through
    confluent-kafka, which Faust does not know. The offsets to commit are chosen before this wait, so
    every output of the events they cover was sent before it began.
    """
    if getattr(Consumer, "_rtqis_patched", False):
        return

    async def _commit_offsets(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        wait = getattr(self.app, "outputs_delivered", None)
        if wait is not None:
            await wait()
        commit = Consumer._rtqis_original_commit_offsets  # type: ignore[attr-defined]
        return bool(await commit(self, offsets, start_new_transaction))

    Consumer._rtqis_original_commit_offsets = Consumer._commit_offsets  # type: ignore[attr-defined]
    Consumer._commit_offsets = _commit_offsets  # type: ignore[method-assign]
    Consumer._rtqis_patched = True  # type: ignore[attr-defined]


def patch_table_manager_start() -> None:
    """Make Faust's ``TableManager.on_start`` go on at once instead of sleeping a fixed second first.

    Faust sleeps 1 s there so that tables defined while the app starts can still register; the
    conductor waits for it before the consumer subscribes, so every worker start (and every restart
    after a crash, and every replay) paid that second. The worker defines all its tables in
    :func:`rtqis.agents.app.create_app`, before it starts; a table added later still fails loudly
    (Faust: "Too late to add tables at this point" once recovery has started).
    """
    if getattr(TableManager, "_rtqis_patched", False):
        return

    async def on_start(self: Any) -> None:
        await asyncio.sleep(0)
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    TableManager._rtqis_original_on_start = TableManager.on_start  # type: ignore[attr-defined]
    TableManager.on_start = on_start  # type: ignore[method-assign]
    TableManager._rtqis_patched = True  # type: ignore[attr-defined]


def patch_worker_consumer_fetch_wait(ms: int) -> None:
    """Make Faust's worker consumer (``AIOKafkaConsumerThread._create_worker_consumer``) wait at most
    ``ms`` milliseconds for a fetch instead of its hard-coded 1,500 ms.

    Why: the embedded broker holds each fetch for the whole wait even when data is there, so every hop
    of the live path cost up to 1.5 s (``RTQIS_FETCH_MAX_WAIT_MS``, default 15 ms; bench/README.md).
    """
    cls = faust_aiokafka.AIOKafkaConsumerThread
    original = getattr(cls, "_rtqis_original_create", None) or cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms  # read by aiokafka when the fetcher starts
        return consumer

    cls._rtqis_original_create = original  # type: ignore[attr-defined]
    cls._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]


def patch_flow_control_resume() -> None:
    """Make mode's ``FlowControlEvent.resume`` drop queued messages only when the flow was suspended.

    ``FlowControlEvent.resume()`` clears every agent queue (``clear_on_resume``), which is meant to drop
    messages fetched before a rebalance suspended the flow. But when table recovery completes, Faust
    resumes the source partitions, awaits ``perform_seek()``, and only then calls ``resume()`` again,
    while the flow is already active: frames fetched in that window were cleared from the agent's queue
    after the consumer had moved past them. The agent never saw them (a table count came back short
    after a restart in 4 of ~30 runs of tests/test_pipeline.py, offset 142 then 144), and Faust's commits
    stayed stuck before the hole. Messages queued while the flow is active belong to the current
    assignment and generation (the stream checks the generation itself), so they are kept; a resume
    after a real suspension still clears, as before.
    """
    if getattr(FlowControlEvent, "_rtqis_patched", False):
        return
    resume = FlowControlEvent.resume

    def _resume(self: Any) -> None:
        if self._suspend.is_set():
            resume(self)  # suspended: resume and drop what was queued before the suspension
        else:
            self._resume.set()  # already flowing: nothing queued is stale

    FlowControlEvent.resume = _resume  # type: ignore[method-assign]
    FlowControlEvent._rtqis_patched = True  # type: ignore[attr-defined]


def patch_producer_buffer_flush() -> None:
    """Make Faust's ``ProducerBuffer.flush`` wait until every message put before it began is handed to
    aiokafka.

    Faust commits consumer offsets after ``producer.flush()``, but its buffer flush gives up after
    100 ms without a message sent (``flush_atmost``), so offsets could be committed while table
    changelog records were still buffered; a SIGKILL then lost them and the table came back behind the
    committed offsets (seen in tests/test_candles_pipeline.py). While stopping it refuses, as Faust's
    own flush does.

    A message counts as handed over only once ``ProducerBuffer._send_pending`` has returned: taken off
    the queue, it is no longer in the buffer's ``size`` while aiokafka may still wait for room in its
    accumulator, and a flush that trusted ``size`` in that window let the offsets be committed ahead of
    it (the likely cause of one failed run of the SIGKILL test in tests/test_sink.py on a loaded
    machine: a restored 1m candle missed its first trades).

    The flush waits for the messages put *before it began* (a count of puts and of hand-overs done; the
    buffer hands over in order), not for an empty buffer: an agent running flat out puts a changelog
    record at every event, so the buffer was almost never empty and Faust committed no offset until the
    input ran out (a 1 M-trade replay showed "0.0 % processed" for 9 s, then 89 %). The offsets a commit
    covers are chosen before its flush, so every changelog record of their events was put before it.
    """
    if getattr(ProducerBuffer, "_rtqis_patched", False):
        return
    send_pending = ProducerBuffer._send_pending
    put = ProducerBuffer.put

    def _put(self: Any, fut: Any) -> None:
        put(self, fut)
        self._rtqis_put = getattr(self, "_rtqis_put", 0) + 1

    async def _send_pending(self: Any, fut: Any) -> None:
        await send_pending(self, fut)
        self._rtqis_done = getattr(self, "_rtqis_done", 0) + 1  # handed over (a failure stops the buffer)

    async def flush(self: Any) -> None:
        target = getattr(self, "_rtqis_put", 0)  # every message put so far, handed over in order
        while getattr(self, "_rtqis_done", 0) < target:
            if self.state != "running" or self.should_stop:
                # as Faust does: refuse, so that no offset is committed past unsent changelog records
                left = target - getattr(self, "_rtqis_done", 0)
                raise RuntimeError(f"Cannot flush: producer buffer stopping with {left} messages not handed over")
            self.message_sent.clear()
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
            except TimeoutError:
                continue

    ProducerBuffer.put = _put  # type: ignore[method-assign]
    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = flush  # type: ignore[method-assign]
    ProducerBuffer._rtqis_patched = True  # type: ignore[attr-defined]


def patch_consumer_highwaters(settings: Settings | None) -> None:
    """Make Faust's table recovery (``AIOKafkaConsumerThread._highwaters``) read changelogs to their true
    end; ``settings=None`` undoes it.

    Faust asks the broker for each changelog partition's end offset and replays up to it; on a broker
    that understates it (Tansu: base offset of the last batch + 1) the last records of a batch would
    be skipped and a restarted table came back short. The true end comes from
    :func:`rtqis.kafka.offsets.true_end_offsets` (a fetch, run in an executor thread); the larger of the
    two is used. Transactional consumers keep Faust's answer (last stable offsets).
    """
    cls = faust_aiokafka.AIOKafkaConsumerThread
    original = getattr(cls, "_rtqis_original_highwaters", None) or cls._highwaters
    cls._rtqis_original_highwaters = original  # type: ignore[attr-defined]
    if settings is None:
        cls._highwaters = original  # type: ignore[method-assign]
        return

    async def _highwaters(self: Any, partitions: Any) -> Any:
        reported = await original(self, partitions)
        if self.consumer.in_transaction or not reported:
            return reported
        loop = asyncio.get_running_loop()
        keys = [(tp.topic, tp.partition) for tp in reported]
        true = await loop.run_in_executor(None, true_end_offsets, settings, keys)
        fixed = {tp: max(v, true[(tp.topic, tp.partition)]) for tp, v in reported.items()}
        if fixed != dict(reported):
            log.info("changelog end offsets corrected from the broker's %s to %s", dict(reported), fixed)
        return fixed

    cls._highwaters = _highwaters  # type: ignore[method-assign]


def patch_fetch_with_no_active_partition() -> None:
    """Make Faust's fetch (``AIOKafkaConsumerThread._fetch_records``) ask aiokafka for the partitions that
    are active when it runs, and for nothing when none is.

    Faust hands its live set of active partitions to the consumer thread, and aiokafka's
    ``fetched_records(partitions)`` returns the records of *every* partition when that set is empty. The
    set empties while a rebalance pauses everything (``pause_partitions``, and the changelogs once
    recovery has read them), so a fetch queued just before returned the records aiokafka had prefetched
    for the paused stream partitions; Faust drops records of partitions that are not active, and
    aiokafka's position had already moved past them. Here the thread takes a copy of the set when it
    runs and returns nothing for an empty one (after a short wait, as an empty fetch would).
    """
    cls = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(cls, "_rtqis_fetch_patched", False):
        return
    fetch_records = cls._fetch_records

    async def _fetch_records(
        self: Any, consumer: Any, active_partitions: Any, timeout: float | None = None, max_records: int | None = None
    ) -> Any:
        active = set(active_partitions or ())
        if not active:
            await asyncio.sleep(min(timeout or 0.0, 0.1))
            return {}
        return await fetch_records(self, consumer, active, timeout=timeout, max_records=max_records)

    cls._fetch_records = _fetch_records  # type: ignore[method-assign]
    cls._rtqis_fetch_patched = True  # type: ignore[attr-defined]


async def seek_to_committed_or_beginning(consumer: Any, faust_consumer: Any) -> Any:
    """aiokafka ``consumer``'s seek to the committed offsets, and to the beginning for the stream partitions
    with no commit point (none, or 0, which aiokafka does not seek to): their committed offsets, as
    aiokafka returns them. ``faust_consumer`` tells changelog partitions apart (recovery seeks those)."""
    committed = await consumer.seek_to_committed()
    fresh = [tp for tp, offset in committed.items() if not offset and not faust_consumer._is_changelog_tp(tp)]
    if fresh:
        log.info(
            "no committed offset for %s: reading from the beginning",
            sorted(f"{tp.topic}[{tp.partition}]" for tp in fresh),
        )
        await consumer.seek_to_beginning(*fresh)
    return committed


def patch_seek_uncommitted_to_beginning() -> None:
    """Make Faust's seek to the committed offsets (``AIOKafkaConsumerThread.seek_to_committed``, run when
    recovery completes) also seek the stream partitions that have no committed offset to their beginning.

    Faust relies on that seek to re-read what it fetched and dropped during a rebalance (records of a
    partition that was not active when they arrived: :func:`patch_fetch_with_no_active_partition`), but
    aiokafka seeks only partitions with a committed offset above 0. A partition never committed kept its
    position past the dropped records: it was never read again. In CI and in 1 of ~40 local runs of
    tests/test_scale_out.py on Apache Kafka, the SIGKILLed worker had never committed one partition and
    the survivor that took it over read nothing of it (the stall watchdog showed: read None, committed
    None, 95 messages waiting, the partition fetched and not paused). Starting such a partition at its
    beginning is what ``auto_offset_reset="earliest"`` means; what was already applied is skipped by the
    idempotent agents.
    """
    cls = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(cls, "_rtqis_seek_patched", False):
        return

    async def seek_to_committed(self: Any) -> Any:
        return await self.call_thread(seek_to_committed_or_beginning, self._ensure_consumer(), self.consumer)

    cls.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    cls._rtqis_seek_patched = True  # type: ignore[attr-defined]
