"""confluent-kafka producers and consumers configured for RT-QIS, and the message producer we share.

Every producer compresses (``RTQIS_COMPRESSION``, zstd by default: the embedded broker keeps every
batch in memory), counts delivery failures in a callback, applies back-pressure when its queue is full
and flushes on close. Every consumer on the live path uses ``RTQIS_FETCH_MAX_WAIT_MS``.

While the broker is unreachable a producer keeps what it sends in its local queue, within two bounds:
its size, :data:`PRODUCER_QUEUE_MAX_KBYTES` of unsent data or :data:`PRODUCER_QUEUE_MAX_MESSAGES` (then
:meth:`MessageProducer.send` blocks, polling, until deliveries free room: back-pressure on the source,
counted in :class:`ProducerStats` ``queue_full_waits`` / ``blocked_s`` and logged once per episode), and
:data:`PRODUCER_MESSAGE_TIMEOUT_MS` per message (then the message fails: counted in ``failed``, logged,
never dropped silently). A broker away for less than the timeout loses nothing (tests/test_outage.py).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ClusterMetadata

from rtqis.errors import BrokerError
from rtqis.schemas import models as m
from rtqis.schemas.codec import encode
from rtqis.schemas.frames import Frame
from rtqis.settings import Settings
from rtqis.topics import TopicSpec

__all__ = [
    "CONSUMER_FETCH_MAX_BYTES",
    "CONSUMER_QUEUE_KB",
    "PRODUCER_MESSAGE_TIMEOUT_MS",
    "PRODUCER_QUEUE_MAX_KBYTES",
    "PRODUCER_QUEUE_MAX_MESSAGES",
    "STOP_FLUSH_S",
    "MessageProducer",
    "ProducerStats",
    "SecurityErrors",
    "cluster_metadata",
    "consumer_config",
    "producer_config",
]

log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("rtqis.librdkafka")

#: the producer's back-pressure point: unsent data its local queue may hold (KiB; 256 MB)
PRODUCER_QUEUE_MAX_KBYTES = 256 * 1024
#: ... and messages it may hold (librdkafka's default, made explicit): frames are few and large
PRODUCER_QUEUE_MAX_MESSAGES = 100_000
#: how long a produced message may wait for the broker (queued or retried) before it fails (ms)
PRODUCER_MESSAGE_TIMEOUT_MS = 120_000
#: how long a producer stopped by a signal waits for its queue to drain (s): its parent kills it after
#: 15 s (8 s once the broker died), and a dead broker never takes them
STOP_FLUSH_S = 5.0


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = settings.kafka_client_config()
    conf.update(
        {
            "compression.type": settings.compression,
            # no duplicates or reordering on retries (works on Apache Kafka and on the embedded broker)
            "enable.idempotence": True,
            # acknowledged once every in-sync replica has it (what idempotence implies; said here so a
            # cluster's min.insync.replicas=2 is what guards each write, tests/test_kafka_cluster.py)
            "acks": "all",
            # a frame of ticks is already a batch: linger only joins the frames of one slice, which are
            # produced back to back (5 ms cost the live paths ~5 ms of latency for no memory saved)
            "linger.ms": settings.producer_linger_ms,
            "batch.num.messages": 10_000,
            "queue.buffering.max.kbytes": PRODUCER_QUEUE_MAX_KBYTES,  # back-pressure points
            "queue.buffering.max.messages": PRODUCER_QUEUE_MAX_MESSAGES,
            "message.timeout.ms": PRODUCER_MESSAGE_TIMEOUT_MS,  # retry while the broker is briefly away
            "logger": _librdkafka_log,
        }
    )
    conf.update(overrides)
    return conf


#: KB of prefetched messages a consumer keeps at most (librdkafka's default: 64 MB). 16 MB is ~3 s of a
#: full-speed replay (about 200k ticks) and an hour of live Binance ticks: the queue never runs dry, and
#: a stalled consumer's memory stays bounded (measured in tests/test_backpressure.py).
CONSUMER_QUEUE_KB = 16 * 1024
#: bytes one fetch may bring (librdkafka's default: 50 MB); two partitions' worth of max.partition.fetch.bytes
CONSUMER_FETCH_MAX_BYTES = 16 * 2**20


def consumer_config(settings: Settings, group: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A consumer config. Without ``group`` the consumer only assigns partitions and never commits."""
    conf: dict[str, Any] = settings.kafka_client_config()
    conf.update(
        {
            "group.id": group or "rtqis-nogroup",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": settings.fetch_max_wait_ms,
            "fetch.queue.backoff.ms": 10,  # librdkafka's default of 1 s halves throughput past 100k queued
            # the embedded broker holds every fetch for the full wait: take more per fetch
            "max.partition.fetch.bytes": 8 * 2**20,
            # a consumer that stops reading (a slow sink write, a held batch) must not grow: librdkafka
            # prefetches up to this many KB per consumer (default 64 MB, on top of what the app holds),
            # and asks for at most fetch.max.bytes per fetch (default 50 MB). See CONSUMER_QUEUE_KB.
            "queued.max.messages.kbytes": CONSUMER_QUEUE_KB,
            "fetch.max.bytes": CONSUMER_FETCH_MAX_BYTES,
            "fetch.error.backoff.ms": 50,
            # the embedded broker holds a group join for about the session timeout (measured: the
            # default 45 s -> 23 s before the first message, 6 s -> 3 s); 6 s is Kafka's own minimum
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "logger": _librdkafka_log,
        }
    )
    conf.update(overrides)
    return conf


@dataclass
class ProducerStats:
    """What a :class:`MessageProducer` did: messages ``sent`` (queued), ``delivered`` and ``failed``
    (acknowledged or not by the broker, e.g. past :data:`PRODUCER_MESSAGE_TIMEOUT_MS`), ``queue_full_waits``
    (sends that had to wait for a full local queue) and ``blocked_s``, the seconds they waited."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    last_error: str = ""
    by_topic: dict[str, int] = field(default_factory=dict)
    queue_full_waits: int = 0
    blocked_s: float = 0.0


class MessageProducer:
    """Encodes models and frames with the configured codec and produces them, keyed, with headers."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self.settings = settings
        self.codec = settings.codec
        self.namespace = settings.namespace
        self.stats = ProducerStats()
        self._p = Producer(producer_config(settings, **overrides))

    def _on_delivery(
        self,
        err: KafkaError | None,
        msg: Message,
        then: Callable[[], None] | None = None,
        failed: Callable[[], None] | None = None,
    ) -> None:
        if err is not None:
            self.stats.failed += 1
            self.stats.last_error = str(err)
            if self.stats.failed == 1 or self.stats.failed % 1000 == 0:  # every failure is counted
                log.warning("delivery to %s failed (%d failures so far): %s", msg.topic(), self.stats.failed, err)
            if failed is not None:
                failed()
        else:
            self.stats.delivered += 1
            if then is not None:
                then()

    def send(
        self,
        topic: TopicSpec,
        obj: m.Message | Frame,
        key: str | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
        on_delivered: Callable[[], None] | None = None,
        on_failed: Callable[[], None] | None = None,
    ) -> None:
        """Produce one message; blocks (polling) while the local queue is full instead of growing or
        dropping it (counted in ``stats.queue_full_waits`` and ``stats.blocked_s``). ``on_delivered`` runs
        (in a later :meth:`poll` or send) once the broker has acknowledged it, ``on_failed`` once its
        delivery has failed (after :data:`PRODUCER_MESSAGE_TIMEOUT_MS`, or an error no retry fixes)."""
        value, headers = encode(obj, self.codec)
        name = topic.full_name(self.namespace)
        kwargs: dict[str, Any] = {"key": key.encode() if key is not None else None, "value": value, "headers": headers}
        if timestamp_ms is not None:
            kwargs["timestamp"] = int(timestamp_ms)
        if partition is not None:
            kwargs["partition"] = partition
        cb = (
            self._on_delivery
            if on_delivered is None and on_failed is None
            else partial(self._on_delivery, then=on_delivered, failed=on_failed)
        )
        blocked_since: float | None = None
        while True:
            try:
                self._p.produce(name, on_delivery=cb, **kwargs)
                break
            except BufferError:
                if blocked_since is None:
                    blocked_since = time.monotonic()
                    self.stats.queue_full_waits += 1
                    log.warning(
                        "local queue full (%d messages queued): waiting for the broker to take them",
                        len(self._p),
                    )
                self._p.poll(0.05)  # back-pressure: wait for deliveries (or timeouts) to free the queue
        if blocked_since is not None:
            waited = time.monotonic() - blocked_since
            self.stats.blocked_s += waited
            log.info("local queue has room again after %.1f s", waited)
        self.stats.sent += 1
        self.stats.by_topic[topic.name] = self.stats.by_topic.get(topic.name, 0) + 1
        self._p.poll(0)

    def poll(self, timeout: float = 0) -> None:
        self._p.poll(timeout)

    @property
    def in_flight(self) -> int:
        """Messages sent whose delivery report has not come yet."""
        return self.stats.sent - self.stats.delivered - self.stats.failed

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still undelivered."""
        deadline = time.monotonic() + timeout_s
        left = self._p.flush(timeout_s)
        while left and time.monotonic() < deadline:
            left = self._p.flush(0.5)
        return int(left)

    def finish(self, *, stopped: bool) -> int:
        """Flush at the end of a run: 30 s when the source ended, :data:`STOP_FLUSH_S` when it was
        ``stopped`` (a signal). Logs how many messages stay undelivered (lost, counted) and returns it; the
        last line logged accounts for every message sent (delivered, failed or undelivered)."""
        timeout_s = STOP_FLUSH_S if stopped else 30.0
        left = self.flush(timeout_s)
        if left:
            log.error(
                "%d messages undelivered at shutdown: the broker did not take them within %.0f s (lost)",
                left,
                timeout_s,
            )
        s = self.stats
        log.info("deliveries: %d sent, %d delivered, %d failed, %d undelivered", s.sent, s.delivered, s.failed, left)
        return left

    def close(self) -> None:
        left = self.flush()
        if left:
            log.error("%d messages were not delivered before shutdown", left)

    def __len__(self) -> int:
        return len(self._p)


def new_consumer(settings: Settings, group: str | None = None, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(settings, group, **overrides))


#: librdkafka errors that no retry fixes: refused credentials (SASL), an untrusted or failed TLS handshake
_SECURITY_ERRORS = (KafkaError._AUTHENTICATION, KafkaError._SSL)


class SecurityErrors:
    """A librdkafka ``error_cb`` that keeps the last authentication or TLS failure (``cause``, one line).

    librdkafka retries such a broker connection until the request times out and then reports only
    "Broker transport failure"; the cause reaches the error callback, served by ``poll``."""

    def __init__(self) -> None:
        self.cause = ""

    def __call__(self, err: KafkaError) -> None:
        if err.code() in _SECURITY_ERRORS:
            text = re.sub(r"^\S+://\S+: ", "", err.str())  # "sasl_ssl://host:port/bootstrap: "
            self.cause = re.sub(r" \(after \d+ms in state \w+\)$", "", text)


#: how often a metadata request is retried while waiting, so a security failure ends the wait early (s)
_METADATA_STEP_S = 0.5


def cluster_metadata(admin: AdminClient, errors: SecurityErrors, what: str, timeout_s: float) -> ClusterMetadata:
    """The cluster's metadata through ``admin`` (made with ``error_cb=errors``), within ``timeout_s``.

    Raises :class:`BrokerError` "``what``: <why>" at once when the broker refuses our credentials or
    certificate (``errors.cause``), else at the timeout with librdkafka's error."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return admin.list_topics(timeout=max(0.1, min(_METADATA_STEP_S, deadline - time.monotonic())))
        except KafkaException as e:
            admin.poll(0)  # serves the error callback
            if errors.cause:
                raise BrokerError(f"{what}: {errors.cause}") from None
            if time.monotonic() >= deadline:
                raise BrokerError(f"{what}: {e}") from None
