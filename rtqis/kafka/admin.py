"""Create and list topics from the registry, on any broker."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from rtqis.errors import BrokerError
from rtqis.kafka.clients import SecurityErrors, cluster_metadata
from rtqis.settings import Settings
from rtqis.topics import ALL_TOPICS, TopicSpec
from rtqis.topics.registry import changelog_topics

__all__ = ["TopicInfo", "admin_client", "create_topics", "delete_topics", "list_topics"]

log = logging.getLogger(__name__)


def admin_client(settings: Settings, errors: SecurityErrors | None = None) -> AdminClient:
    """An admin client; ``errors`` collects authentication / TLS failures (see :func:`cluster_metadata`)."""
    conf = settings.kafka_client_config()
    conf["logger"] = logging.getLogger("rtqis.librdkafka")
    if errors is not None:
        conf["error_cb"] = errors
        conf["log_level"] = 0  # polled for the errors: no log lines on top of the one error raised
    return AdminClient(conf)


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


def create_topics(settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS, timeout_s: float = 30.0) -> list[str]:
    """Create every missing topic of ``specs`` (and the Faust changelogs) in the configured namespace.

    Existing topics are left alone; a partition count that differs from the registry is an error,
    because Faust crashes on a changelog whose partitions differ from its source topic.
    Returns the names created.
    """
    errors = SecurityErrors()
    admin = admin_client(settings, errors)
    wanted: dict[str, tuple[int, dict[str, str]]] = {}
    for spec in specs:
        wanted[spec.full_name(settings.namespace)] = (spec.partition_count(settings.partitions), spec.kafka_config())
    for name in changelog_topics(settings.namespace):
        wanted[name] = (settings.partitions, {"cleanup.policy": "compact"})
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
