"""Consumer groups: the session timeout to ask the broker for, by what the broker is.

Tansu holds a group join for about half the session timeout, so at Kafka's minimum (6 s) every member
waited 3 s to join: the worker at each start and restart, the sink, a bot. Tansu accepts shorter sessions
and Kafka refuses them (``group.min.session.timeout.ms``, tests/test_broker_compat.py), so the session is
2 s on a broker that reports Tansu's cluster id and 6 s elsewhere (``RTQIS_GROUP_SESSION_S`` overrides).
Measured: the worker ready 5.1 -> 3.0 s, a replay of tests/data 6.6 -> 4.6 s; 1.5 s was no faster.
"""

from __future__ import annotations

from typing import Any

from rtqis.errors import BrokerError
from rtqis.kafka.admin import cluster_id
from rtqis.settings import Settings

__all__ = [
    "KAFKA_SESSION_S",
    "TANSU_CLUSTER_ID",
    "TANSU_SESSION_S",
    "consumer_timeouts",
    "group_session_s",
    "heartbeat_s",
]

#: the cluster id Tansu reports unless started with another (``tansu broker --cluster-id``)
TANSU_CLUSTER_ID = "tansu_cluster"
#: the group session on Tansu (s): its join then takes ~1 s
TANSU_SESSION_S = 2.0
#: the group session elsewhere (s): Kafka's group.min.session.timeout.ms
KAFKA_SESSION_S = 6.0


def group_session_s(settings: Settings) -> float:
    """The group session timeout (s) for the broker of ``settings``: ``RTQIS_GROUP_SESSION_S`` if set,
    else :data:`TANSU_SESSION_S` when the broker reports Tansu's cluster id, else :data:`KAFKA_SESSION_S`
    (also when no broker answers yet: the member then fails on the broker, not on its session)."""
    if settings.group_session_s is not None:
        return settings.group_session_s
    try:
        tansu = cluster_id(settings) == TANSU_CLUSTER_ID
    except BrokerError:
        return KAFKA_SESSION_S
    return TANSU_SESSION_S if tansu else KAFKA_SESSION_S


def heartbeat_s(session_s: float) -> float:
    """The heartbeat interval for a ``session_s`` session: a quarter of a short one, at most 1 s."""
    return min(1.0, session_s / 4)


def consumer_timeouts(session_s: float) -> dict[str, Any]:
    """confluent-kafka consumer settings for a ``session_s`` group session."""
    return {"session.timeout.ms": int(session_s * 1000), "heartbeat.interval.ms": int(heartbeat_s(session_s) * 1000)}
