"""Typed subscriptions for trading bots: the topics' Pydantic models, live or replayed, from any time.

What
    ``subscribe("analytics.pair", since="earliest")`` returns a :class:`Subscription`, an iterator
    (``for``) and an async iterator (``async for``) of decoded messages: the topic's model
    (:class:`~rtqis.schemas.models.PairSignal`, :class:`~rtqis.schemas.models.Alert`,
    :class:`~rtqis.schemas.models.Candle`, :class:`~rtqis.schemas.models.AdfResult`, ...). On the tick
    topics (``ticks.trade``, ``ticks.book``) a message is a *frame* (many ticks of one symbol in numpy
    columns, :class:`~rtqis.schemas.frames.Frame`) and the subscription yields the frame as it is:
    ``frame.cols["bid_price"]`` etc., ``frame.models()`` for row models. Several topics can be read by
    one subscription (``subscribe(["analytics.pair", "alerts"])``); messages of different topics or
    partitions come in arrival order, not in event time.

Where to start (``since``)
    ``"latest"`` (only what is published from now on; the default), ``"earliest"`` (everything the
    topic still holds), an aware :class:`~datetime.datetime` or epoch milliseconds: each partition
    starts at its first record whose Kafka timestamp is >= that time (through
    :func:`rtqis.kafka.offsets.offsets_at_time`, right on brokers whose own time lookup is wrong, such
    as the embedded one). "Latest" is the true end offset (:mod:`rtqis.kafka.offsets`), not the
    broker's answer, which the embedded broker gets wrong.

Delivery: at least once
    Without ``group`` nothing is committed: every subscription reads from ``since``. With ``group`` a
    consumer group is joined (several bots with the same group share the partitions) and a restart
    resumes after the last message the caller *handled*; ``since`` only applies to partitions the group
    has never committed. A message counts as handled when the caller asks for the next one (the next
    ``for``/``async for`` step), or at once with :meth:`Subscription.commit`. Handled offsets are
    committed at most every ``commit_interval_s`` (asynchronously), on :meth:`~Subscription.commit`
    and on :meth:`~Subscription.close` (synchronously). The message being handled when a bot dies is
    therefore delivered again after the restart (and, after a crash, up to ``commit_interval_s`` of
    messages before it): make handlers idempotent or call ``commit()`` after each one.

Bad messages
    A message that cannot be decoded (foreign bytes, an unknown schema version, a null value) is
    skipped with a logged warning and counted in ``Subscription.stats.skipped``; it counts as handled.
    A bot never dies on one bad message.

Shutdown
    ``close()``, the context manager (``with`` / ``async with``) or Ctrl-C (KeyboardInterrupt inside
    the iteration closes the subscription before it propagates) leave the consumer closed (its group
    left, handled offsets committed) and no thread behind: the async iterator polls in one worker
    thread of its own, stopped by ``close()``.

Namespaces: ``namespace="NAME"`` reads the replay topics ``replay.NAME.<topic>`` (see
:mod:`rtqis.topics`); ``None`` takes the settings' namespace (``""`` = live), so the same bot code runs
on live and replayed data. Topic names are the registry's short names (``"analytics.pair"``) or
:class:`~rtqis.topics.TopicSpec` objects.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from rtqis.errors import BrokerError, DecodeError, RtqisError
from rtqis.kafka.clients import consumer_config
from rtqis.kafka.groups import consumer_timeouts, group_session_s
from rtqis.kafka.offsets import topic_offsets
from rtqis.schemas import models as m
from rtqis.schemas.codec import decode
from rtqis.schemas.frames import Frame
from rtqis.settings import Settings, load_settings
from rtqis.topics import ALL_TOPICS, TopicSpec, by_name

__all__ = [
    "Delivery",
    "Since",
    "Subscription",
    "SubscriptionError",
    "SubscriptionStats",
    "parse_since",
    "subscribe",
]

log = logging.getLogger(__name__)

Since = Literal["latest", "earliest"] | datetime | int
"""Where a subscription starts: ``"latest"``, ``"earliest"``, an aware datetime or epoch ms UTC."""

TopicArg = str | TopicSpec
_TIMEOUT_S = 10.0


class SubscriptionError(RtqisError):
    """A subscription that cannot be made: unknown topic, bad ``since``, closed subscription."""

    exit_code = 2


@dataclass(frozen=True)
class Delivery:
    """Where the message last yielded came from (``Subscription.last``)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None


_Polled = tuple[m.Message | Frame, Delivery]


@dataclass
class SubscriptionStats:
    """Counters of one subscription: messages read from Kafka, yielded to the caller, skipped as
    undecodable (with the last reason), and offset commits made."""

    received: int = 0
    yielded: int = 0
    skipped: int = 0
    last_skip_reason: str = ""
    commits: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


def parse_since(text: str) -> Since:
    """``since`` from a command-line string: ``latest``, ``earliest``, epoch ms (digits) or an ISO-8601
    time with a zone (``2024-08-09T00:00:00Z``)."""
    t = text.strip()
    if t in ("latest", "earliest"):
        return t  # type: ignore[return-value]  # narrowed by the test above
    if t.isdigit():
        return int(t)
    try:
        when = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise SubscriptionError(f"since: {text!r} is neither latest, earliest, epoch ms nor an ISO-8601 time") from None
    if when.tzinfo is None:
        raise SubscriptionError(f"since: {text!r} has no time zone (add Z for UTC)")
    return when


def _since_ms(since: Since) -> int | None:
    """Epoch ms of a time ``since`` (None for latest/earliest); raise on anything else."""
    if isinstance(since, datetime):
        if since.tzinfo is None:
            raise SubscriptionError("since: a naive datetime is ambiguous; give one with a time zone (UTC)")
        return int(since.timestamp() * 1000)
    if isinstance(since, bool) or not isinstance(since, int | str):
        raise SubscriptionError(f"since must be 'latest', 'earliest', a datetime or epoch ms, got {since!r}")
    if isinstance(since, int):
        if since < 0:
            raise SubscriptionError(f"since: epoch ms must be >= 0, got {since}")
        return since
    if since not in ("latest", "earliest"):
        raise SubscriptionError(f"since must be 'latest', 'earliest', a datetime or epoch ms, got {since!r}")
    return None


def _partitions(settings: Settings, names: list[str]) -> list[tuple[str, int]]:
    """(topic, partition) of every partition of ``names``; :class:`BrokerError` for a missing topic."""
    c = Consumer(consumer_config(settings))
    try:
        md = c.list_topics(timeout=_TIMEOUT_S)
    except KafkaException:
        raise BrokerError(f"no broker answers at {settings.bootstrap}: start one with `rtqis up`") from None
    finally:
        c.close()
    out: list[tuple[str, int]] = []
    for t in names:
        tm = md.topics.get(t)
        if tm is None or tm.error is not None:
            raise BrokerError(f"unknown topic {t!r} (not created on {settings.bootstrap})")
        out.extend((t, p) for p in sorted(tm.partitions))
    return out


def _resolve(topics: TopicArg | Sequence[TopicArg]) -> list[TopicSpec]:
    """Registry specs of the requested topics; one clear error naming the valid ones otherwise."""
    items: Iterable[TopicArg] = [topics] if isinstance(topics, str | TopicSpec) else topics
    specs: list[TopicSpec] = []
    for t in items:
        spec = t if isinstance(t, TopicSpec) else by_name(t)
        if spec is None or (isinstance(t, str) and t != spec.name):
            valid = ", ".join(s.name for s in ALL_TOPICS)
            hint = " (give the short name and namespace=...)" if isinstance(t, str) and t.startswith("replay.") else ""
            raise SubscriptionError(f"unknown topic {t!r}{hint}; topics are: {valid}")
        if spec not in specs:
            specs.append(spec)
    if not specs:
        raise SubscriptionError("subscribe() needs at least one topic")
    return specs


class Subscription:
    """Decoded messages of one or more topics; see the module documentation for the semantics.

    Build it with :func:`subscribe`. Not thread-safe: iterate it from one thread (or one event loop);
    :meth:`stop` is the one method other threads may call.
    """

    def __init__(
        self,
        specs: list[TopicSpec],
        *,
        since: Since,
        group: str | None,
        namespace: str,
        settings: Settings,
        stop_at_end: bool = False,
        commit_interval_s: float = 1.0,
        poll_interval_s: float = 0.2,
    ) -> None:
        since_ms = _since_ms(since)
        self.settings = settings
        self.group = group
        self.namespace = namespace
        self.stats = SubscriptionStats()
        self.last: Delivery | None = None
        self._schema = {s.full_name(namespace): s.value_schema for s in specs}
        self._short = {s.full_name(namespace): s.name for s in specs}
        self._commit_interval_s = commit_interval_s
        self._poll_s = poll_interval_s
        self._stop = threading.Event()
        self._closed = False
        self._current: tuple[str, int, int] | None = None  # (topic, partition, offset) yielded, not handled
        self._handled: dict[tuple[str, int], int] = {}  # next offset to commit, per partition
        self._committed: dict[tuple[str, int], int] = {}
        self._last_commit = time.monotonic()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._inflight: concurrent.futures.Future[_Polled | None] | None = None
        self._pending: _Polled | None = None  # polled by a cancelled await, not yet handed out

        names = list(self._schema)
        self._ends: dict[tuple[str, int], int] = {}  # true end offsets, looked up only when needed
        if since == "earliest" and not stop_at_end:
            # the consumer resolves "the beginning" itself: no offset lookup (the true end of a busy tick
            # topic is the slow part of one)
            self._start = {k: OFFSET_BEGINNING for k in _partitions(settings, names)}
        else:
            # one lookup: partitions, true ends and, for a time, the first offset at or after it
            # (:func:`rtqis.kafka.offsets.offsets_at_time`'s own machinery)
            rows = topic_offsets(settings, names, at_time_ms=since_ms)  # BrokerError names a missing topic
            self._ends = {(r.topic, r.partition): r.end for r in rows}
            if since == "latest":
                self._start = dict(self._ends)
            elif since == "earliest":
                self._start = {(r.topic, r.partition): r.earliest for r in rows}
            else:
                self._start = {(r.topic, r.partition): r.end if r.at_time is None else r.at_time for r in rows}
        self._stop_at_end = stop_at_end
        self._position: dict[tuple[str, int], int] = {}  # next offset to read, per partition read so far
        self._assigned: set[tuple[str, int]] | None = None  # None until the group assigned partitions

        overrides: dict[str, Any] = {}
        if group is not None:
            overrides["enable.auto.commit"] = False
            overrides["auto.offset.reset"] = "earliest"
            overrides.update(consumer_timeouts(group_session_s(settings)))  # joins in ~1 s on Tansu, not 3
        self._c = Consumer(consumer_config(settings, group, **overrides))
        try:
            if group is None:
                self._c.assign([TopicPartition(t, p, off) for (t, p), off in sorted(self._start.items())])
                self._assigned = set(self._start)
            else:
                self._c.subscribe(names, on_assign=self._on_assign, on_revoke=self._on_revoke)
        except BaseException:
            self._c.close()
            raise
        log.info(
            "subscribed to %s (since %s, group %s, %d partitions)", ", ".join(names), since, group, len(self._start)
        )

    # --- group rebalances (run inside poll) ----------------------------------------------------------
    def _on_assign(self, c: Consumer, partitions: list[TopicPartition]) -> None:
        committed = c.committed(partitions, timeout=_TIMEOUT_S)
        for tp, got in zip(partitions, committed, strict=True):
            k = (tp.topic, tp.partition)
            tp.offset = got.offset if got.offset >= 0 else self._start.get(k, OFFSET_BEGINNING)
            self._position.setdefault(k, tp.offset)
        c.assign(partitions)
        self._assigned = (self._assigned or set()) | {(tp.topic, tp.partition) for tp in partitions}
        log.info("group %s assigned %s", self.group, [(tp.topic, tp.partition, tp.offset) for tp in partitions])

    def _on_revoke(self, c: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._commit(sync=True, only=gone)
        if self._assigned is not None:
            self._assigned = self._assigned - gone  # a new set: the async worker thread may be reading it
        for k in gone:
            self._position.pop(k, None)

    # --- offsets -------------------------------------------------------------------------------------
    def _mark_handled(self) -> None:
        """The message yielded last was handled: its offset + 1 is the next commit of its partition."""
        if self._current is not None:
            t, p, off = self._current
            self._handled[(t, p)] = off + 1
            self._current = None
        if self.group is not None and time.monotonic() - self._last_commit >= self._commit_interval_s:
            self._commit(sync=False)

    def _commit(self, sync: bool, only: set[tuple[str, int]] | None = None) -> None:
        todo = {
            k: off for k, off in self._handled.items() if self._committed.get(k) != off and (only is None or k in only)
        }
        self._last_commit = time.monotonic()
        if self.group is None or not todo:
            return
        offsets = [TopicPartition(t, p, off) for (t, p), off in sorted(todo.items())]
        try:
            if sync:
                self._c.commit(offsets=offsets, asynchronous=False)
            else:
                self._c.commit(offsets=offsets, asynchronous=True)
        except Exception as e:  # KafkaException; a failed commit means redelivery, never loss
            log.warning("commit of %s failed: %s", offsets, e)
            return
        self._committed.update(todo)
        self.stats.commits += 1

    def commit(self) -> None:
        """Mark the message yielded last as handled and commit every handled offset now (synchronously).

        A no-op without a group."""
        if self._closed:
            return
        self._wait_inflight()
        if self._current is not None:
            t, p, off = self._current
            self._handled[(t, p)] = off + 1
            self._current = None
        self._commit(sync=True)

    # --- reading -------------------------------------------------------------------------------------
    def _at_end(self) -> bool:
        if not self._stop_at_end or self._assigned is None:
            return False
        return all(self._position.get(k, self._start.get(k, 0)) >= self._ends.get(k, 0) for k in self._assigned)

    def _poll_once(self, timeout_s: float) -> _Polled | None:
        """Wait up to ``timeout_s`` for one message; its decoded value and origin, or None (nothing, or
        skipped). Runs in the async worker thread too: it touches only the read position and stats."""
        msg: Message | None = self._c.poll(timeout_s)
        if msg is None:
            return None
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise BrokerError(f"consumer failed: {err}")
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", err)
            return None
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            return None
        k = (topic, partition)
        self._position[k] = offset + 1
        self.stats.received += 1
        try:
            obj = decode(msg.value(), msg.headers(), self._schema.get(topic))
        except DecodeError as e:
            self.stats.skipped += 1
            self.stats.last_skip_reason = f"{topic}[{partition}]@{offset}: {e}"
            log.warning("skipped an undecodable message at %s (%d skipped so far)", self.stats.last_skip_reason,
                        self.stats.skipped)  # fmt: skip
            self._handled[k] = offset + 1
            return None
        key = msg.key()
        where = Delivery(
            topic, partition, offset, msg.timestamp()[1], key.decode("utf-8", "replace") if key is not None else None
        )
        return obj, where

    def _hand_out(self, polled: _Polled) -> m.Message | Frame:
        """Give a polled message to the caller: from now on it is the one :meth:`commit` marks handled."""
        obj, where = polled
        self.last = where
        self._current = (where.topic, where.partition, where.offset)
        self.stats.yielded += 1
        short = self._short.get(where.topic, where.topic)
        self.stats.by_topic[short] = self.stats.by_topic.get(short, 0) + 1
        return obj

    def _finished(self) -> bool:
        return self._closed or self._stop.is_set() or self._at_end()

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> m.Message | Frame:
        if self._closed:
            raise StopIteration
        try:
            self._mark_handled()
            while not self._finished():
                polled = self._take_pending() or self._poll_once(self._poll_s)
                if polled is not None:
                    return self._hand_out(polled)
        except BaseException:  # Ctrl-C or a broker failure: close (commit what was handled) and re-raise
            self.close()
            raise
        self.close()
        raise StopIteration

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> m.Message | Frame:
        """The next message, polled in this subscription's worker thread (the event loop never blocks).

        Cancelling the await (a timeout, a task cancelled) loses nothing: a message polled meanwhile is
        returned by the next call."""
        if self._closed:
            raise StopAsyncIteration
        try:
            self._mark_handled()
            while not self._finished():
                polled = self._take_pending()
                if polled is None:
                    if self._inflight is None:
                        if self._executor is None:
                            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rtqis-client")
                        self._inflight = self._executor.submit(self._poll_once, self._poll_s)
                    polled = await asyncio.shield(asyncio.wrap_future(self._inflight))
                    self._inflight = None
                if polled is not None:
                    return self._hand_out(polled)
        except asyncio.CancelledError:
            raise  # the in-flight poll is kept for the next call; close() waits for it
        except BaseException:
            self.close()
            raise
        self.close()
        raise StopAsyncIteration

    # --- shutdown ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the iteration to end after the current poll (safe from another thread or a signal handler)."""
        self._stop.set()

    def _wait_inflight(self) -> None:
        """Let a poll left running by a cancelled ``await`` finish; keep what it read for the next step."""
        if self._inflight is not None:
            try:
                self._pending = self._inflight.result(timeout=self._poll_s + _TIMEOUT_S) or self._pending
            except Exception as e:  # the poll's own error: the next step polls again
                log.debug("in-flight poll ended with %s", e)
            self._inflight = None

    def _take_pending(self) -> _Polled | None:
        if self._inflight is not None and self._inflight.done():
            self._wait_inflight()
        polled, self._pending = self._pending, None
        return polled

    def close(self) -> None:
        """Commit the handled offsets (with a group), leave the group, close the consumer and stop the
        worker thread. Idempotent. The message yielded last is NOT marked handled (call :meth:`commit`
        first for that): it comes again to the next subscription of the group."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wait_inflight()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        try:
            self._commit(sync=True)
        finally:
            self._c.close()
        log.info("subscription closed: %s", self.stats)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop on the in-flight poll."""
        if self._inflight is not None:
            await asyncio.wait([asyncio.wrap_future(self._inflight)])
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def topics(self) -> list[str]:
        """The full topic names read (namespace applied)."""
        return list(self._schema)


def subscribe(
    topic: TopicArg | Sequence[TopicArg],
    *,
    since: Since = "latest",
    group: str | None = None,
    namespace: str | None = None,
    settings: Settings | None = None,
    stop_at_end: bool = False,
    commit_interval_s: float = 1.0,
) -> Subscription:
    """Subscribe to one or more topics by their registry names; see the module documentation.

    ``stop_at_end=True`` ends the iteration once every (assigned) partition is read up to the end it
    had when the subscription was made: for reading a finished replay or a backlog. ``settings``
    defaults to :func:`rtqis.settings.load_settings` (environment and ``rtqis.toml``). Raises
    :class:`SubscriptionError` for an unknown topic or a bad ``since``, :class:`~rtqis.errors.BrokerError`
    when no broker answers or the topic was not created."""
    specs = _resolve(topic)
    _since_ms(since)  # a bad since fails before any connection
    s = settings if settings is not None else load_settings()
    ns = s.namespace if namespace is None else namespace
    return Subscription(
        specs,
        since=since,
        group=group,
        namespace=ns,
        settings=s,
        stop_at_end=stop_at_end,
        commit_interval_s=commit_interval_s,
    )
