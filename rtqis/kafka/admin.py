"""Create and list topics from the registry, on any broker.

A created topic is usable when :func:`create_topics` returns: Apache Kafka (KRaft) answers CreateTopics
once its controller has committed the topic, but its broker learns of it from the metadata log later
(~0.1 s on an idle node, seconds when the machine is loaded) and serves a partition only once it has
created its log: a client asking in between is told UNKNOWN_TOPIC_OR_PART, then NOT_LEADER_FOR_PARTITION.
:func:`wait_for_topics` waits until the metadata shows each new topic with all its partitions led and
each partition answers an offsets request; Tansu serves them at once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from rtqis.errors import BrokerError
from rtqis.kafka.clients import SecurityErrors, cluster_metadata
from rtqis.settings import Settings
from rtqis.topics import ALL_TOPICS, TopicSpec
from rtqis.topics.registry import TIMESTAMP_CONFIG, changelog_topics

__all__ = [
    "TopicInfo",
    "admin_client",
    "broker_metadata",
    "cluster_id",
    "create_topics",
    "delete_topics",
    "list_topics",
    "wait_for_topics",
]

log = logging.getLogger(__name__)

#: how often :func:`wait_for_topics` asks the broker for metadata again (s)
_METADATA_POLL_S = 0.05


def admin_client(settings: Settings, errors: SecurityErrors | None = None) -> AdminClient:
    """An admin client; ``errors`` collects authentication / TLS failures (see :func:`cluster_metadata`)."""
    conf = settings.kafka_client_config()
    conf["logger"] = logging.getLogger("rtqis.librdkafka")
    if errors is not None:
        conf["error_cb"] = errors
        conf["log_level"] = 0  # polled for the errors: no log lines on top of the one error raised
    return AdminClient(conf)


def broker_metadata(client: Any, settings: Settings, topic: str | None = None, timeout_s: float = 10.0) -> Any:
    """The broker's metadata (of ``topic`` only, if given), read with ``client`` (an admin client or a
    consumer); BrokerError if no broker answers."""
    try:
        return client.list_topics(topic, timeout=timeout_s)
    except KafkaException:
        raise BrokerError(
            f"no broker answers at {settings.bootstrap}: start one with `rtqis up` or `rtqis broker`"
        ) from None


def cluster_id(settings: Settings, client: Any = None, topic: str | None = None) -> str:
    """The cluster id the broker at ``settings.bootstrap`` reports ("" if it gives none), read with
    ``client`` (default: a new admin client) in the metadata of ``topic`` only if given; BrokerError if
    no broker answers."""
    md = broker_metadata(client if client is not None else admin_client(settings), settings, topic)
    return str(md.cluster_id or "")


@dataclass(frozen=True, order=True)
class TopicInfo:
    name: str
    partitions: int


def list_topics(settings: Settings, timeout_s: float = 10.0) -> list[TopicInfo]:
    errors = SecurityErrors()
    md = cluster_metadata(
        admin_client(settings, errors), errors, f"cannot list topics at {settings.bootstrap}", timeout_s
    )
    return sorted(
        TopicInfo(name, len(t.partitions)) for name, t in md.topics.items() if not name.startswith(("__", "_rtqis."))
    )


def _not_ready(admin: AdminClient, wanted: dict[str, int], timeout_s: float) -> dict[str, str]:
    """``{topic: why}`` for each topic of ``wanted`` (name -> partition count) the broker's metadata does
    not yet show with that many partitions, each with a leader that answers for it."""
    md = admin.list_topics(timeout=timeout_s)
    why: dict[str, str] = {}
    for name, parts in wanted.items():
        tm = md.topics.get(name)
        if tm is None:
            why[name] = "not in the metadata"
        elif tm.error is not None:
            why[name] = tm.error.str()
        elif len(tm.partitions) < parts:
            why[name] = f"{len(tm.partitions)} of {parts} partitions"
        else:
            leaderless = sorted(p for p, pm in tm.partitions.items() if pm.leader < 0)
            if leaderless:
                why[name] = f"partitions {leaderless} have no leader"
    if why:
        return why
    # the metadata names a leader a moment before that broker serves the partition (Kafka creates its
    # log first; NOT_LEADER_FOR_PARTITION meanwhile): every partition must answer an offsets request
    asked = {TopicPartition(n, p): OffsetSpec.earliest() for n, parts in wanted.items() for p in range(parts)}
    for tp, fut in admin.list_offsets(asked, request_timeout=timeout_s).items():
        try:
            fut.result()
        except KafkaException as e:
            why.setdefault(tp.topic, f"partition {tp.partition}: {e.args[0].str() if e.args else e}")
    return why


def wait_for_topics(admin: AdminClient, wanted: dict[str, int], timeout_s: float = 30.0) -> None:
    """Return once the broker's metadata shows every topic of ``wanted`` (name -> partition count) with
    all its partitions and a leader for each, and each leader answers an offsets request for it; raise
    :class:`BrokerError` naming what is still missing after ``timeout_s`` seconds.

    Needed after a CreateTopics answer, which Apache Kafka gives before its broker's metadata has the
    topic (see the module docstring): without the wait a client's first lookup may fail."""
    if not wanted:
        return
    deadline = time.monotonic() + timeout_s
    t0 = time.monotonic()
    while True:
        left = deadline - time.monotonic()
        try:
            why = _not_ready(admin, wanted, max(left, 0.1))
        except KafkaException as e:
            why = {"(metadata)": str(e)}
        if not why:
            log.debug("%d topics in the metadata after %.2f s", len(wanted), time.monotonic() - t0)
            return
        if time.monotonic() >= deadline:
            shown = "; ".join(f"{n}: {w}" for n, w in sorted(why.items())[:5])
            more = f" (and {len(why) - 5} more)" if len(why) > 5 else ""
            raise BrokerError(
                f"{len(why)} topics created but not usable after {timeout_s:.0f} s, per the broker's metadata: "
                f"{shown}{more}"
            )
        time.sleep(_METADATA_POLL_S)


def _topic_config(spec: TopicSpec, settings: Settings) -> dict[str, str]:
    """The Kafka config of ``spec``'s topic in the configured namespace: no time retention, and a bound by
    size (``RTQIS_TOPIC_RETENTION_MB`` per partition) on the live namespace's "delete" topics.

    Kafka's time retention counts from each record's timestamp, which RT-QIS sets to the event time: a
    replay of trades older than 7 days was deleted within the broker's retention check (a minute on the
    local Kafka), before the worker read it. A replay (or test) namespace is finite and deleted as a
    whole, so its topics keep every message (Tansu ignores retention)."""
    conf = spec.kafka_config()
    if conf.get("cleanup.policy") == "delete" and not settings.namespace and settings.topic_retention_mb:
        conf["retention.bytes"] = str(settings.topic_retention_mb * 1024 * 1024)
    return conf


def create_topics(settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS, timeout_s: float = 30.0) -> list[str]:
    """Create every missing topic of ``specs`` (and the Faust changelogs) in the configured namespace.

    Topics have no time retention, the live ones a bound by size (:func:`_topic_config`).
    Existing topics are left alone; a partition count that differs from the registry is an error,
    because Faust crashes on a changelog whose partitions differ from its source topic.
    Returns once the broker's metadata shows every new topic with its partitions (:func:`wait_for_topics`,
    within ``timeout_s`` seconds), so the caller can use them at once. Returns the names created.
    """
    errors = SecurityErrors()
    admin = admin_client(settings, errors)
    wanted: dict[str, tuple[int, dict[str, str]]] = {}
    for spec in specs:
        wanted[spec.full_name(settings.namespace)] = (
            spec.partition_count(settings.partitions),
            _topic_config(spec, settings),
        )
    for name in changelog_topics(settings.namespace):
        wanted[name] = (settings.partitions, {"cleanup.policy": "compact", **TIMESTAMP_CONFIG})
    md = cluster_metadata(admin, errors, f"cannot reach the broker at {settings.bootstrap}", timeout_s)
    existing = {t.topic: len(t.partitions) for t in md.topics.values()}
    for name, (parts, _) in wanted.items():
        if name in existing and existing[name] != parts:
            raise BrokerError(
                f"topic {name} has {existing[name]} partitions, the registry wants {parts}: "
                "delete it or set RTQIS_PARTITIONS to match"
            )
    new = [
        NewTopic(n, num_partitions=p, replication_factor=-1, config=c)
        for n, (p, c) in wanted.items()
        if n not in existing
    ]
    if not new:
        return []
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as e:
            if e.args and isinstance(e.args[0], KafkaError) and e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise BrokerError(f"cannot create topic {name}: {e}") from None
    wait_for_topics(admin, {t.topic: t.num_partitions for t in new}, timeout_s)
    log.info("created %d topics: %s", len(created), ", ".join(sorted(created)))
    return sorted(created)


def delete_topics(settings: Settings, names: list[str], timeout_s: float = 30.0) -> None:
    if not names:
        return
    futures = admin_client(settings).delete_topics(names, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, fut in futures.items():
        try:
            fut.result()
        except KafkaException as e:
            raise BrokerError(f"cannot delete topic {name}: {e}") from None
