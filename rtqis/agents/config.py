"""The worker's Faust configuration: what each setting is and why (measured on the embedded broker, see
bench/README.md).

- table recovery reads each changelog to its true end, probed with a fetch, when the broker's end
  offsets fail the self-check at start (``RTQIS_RECOVERY_FIX``, :func:`recovery_fix`);
- consumer fetch wait = ``RTQIS_FETCH_MAX_WAIT_MS`` (Faust hard-codes 1,500 ms and the broker holds each
  fetch that long even when data is there: :mod:`rtqis.agents.patches`);
- rebalance/session timeouts of a few seconds; on the embedded Tansu a session of 2 s, which it accepts
  and which makes its group join 1 s instead of 3 (:func:`rtqis.kafka.groups.group_session_s`);
- Faust's data directory under ``RTQIS_DATA_DIR`` (:func:`faust_datadir`), not the current directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rtqis.agents.security import broker_credentials
from rtqis.kafka.groups import KAFKA_SESSION_S, heartbeat_s
from rtqis.kafka.offsets import broker_capabilities
from rtqis.settings import Settings
from rtqis.topics.registry import app_id

__all__ = ["app_config", "faust_datadir", "processing_guarantee", "recovery_fix"]


def faust_datadir(settings: Settings) -> Path:
    """Faust's data directory of the worker: ``RTQIS_DATA_DIR/faust/<app id>``.

    Faust's default is ``"{app id}-data"`` relative to the current directory, so every worker, test
    and replay left a ``rtqis-...-data/v1/tables`` folder (empty: the tables are in memory) wherever it
    was started. Faust makes this directory without its parents: the caller creates the parent."""
    return settings.data_dir / "faust" / app_id(settings.namespace)


def recovery_fix(settings: Settings, exact_end_offsets: bool | None = None) -> str:
    """The table-recovery fix to use: ``"off"``, ``"end-offsets"`` or ``"batch1"``.

    ``RTQIS_RECOVERY_FIX=auto`` asks the broker whether its end offsets are exact (a self-check, see
    :func:`rtqis.kafka.offsets.broker_capabilities`) unless ``exact_end_offsets`` already says so.
    """
    fix = settings.recovery_fix
    if fix == "auto":
        if exact_end_offsets is None:
            exact_end_offsets = broker_capabilities(settings).exact_end_offsets
        fix = "off" if exact_end_offsets else "end-offsets"
    return fix


def processing_guarantee(settings: Settings) -> str:
    """The worker's processing guarantee: ``"exactly_once"`` or ``"at_least_once"``.

    ``RTQIS_PROCESSING_GUARANTEE=auto`` (the default) is at_least_once on every broker: its agents are
    idempotent (trade-id marks, the outbox) and the crash drills prove it on Tansu and Kafka. Faust's
    exactly_once starts and runs on Apache Kafka (not on Tansu, whose transactions it cannot use), but
    once, under load, a SIGKILLed exactly-once worker restarted 60 trades short of 3,000
    (``tests/test_kafka_security.py``): it is opt-in until that is understood."""
    if settings.processing_guarantee != "auto":
        return settings.processing_guarantee
    return "at_least_once"


def app_config(
    settings: Settings, fix: str, guarantee: str = "at_least_once", session_s: float = KAFKA_SESSION_S
) -> dict[str, Any]:
    """The ``faust.App`` options of the worker for ``settings``, the recovery ``fix``, the processing
    ``guarantee`` (:func:`processing_guarantee`) and the group session ``session_s``
    (:func:`rtqis.kafka.groups.group_session_s`)."""
    conf: dict[str, Any] = {
        "processing_guarantee": guarantee,
        "broker": f"kafka://{settings.bootstrap.replace(',', ';kafka://')}",
        "store": "memory://",
        "datadir": str(faust_datadir(settings)),
        "topic_partitions": settings.partitions,
        "topic_allow_declare": True,
        # the group join waits for the rebalance timeout: keep it short (measured ~4.5 s to Ready)
        "broker_rebalance_timeout": 5.0,
        # Kafka refuses sessions below its group.min.session.timeout.ms (default 6 s); Tansu takes 2 s
        "broker_session_timeout": session_s,
        "broker_heartbeat_interval": heartbeat_s(session_s),
        "broker_commit_interval": 1.0,
        "web_port": settings.worker_web_port,
        "web_bind": "127.0.0.1",
        "web_enabled": False,
        "producer_compression_type": None if settings.compression == "none" else settings.compression,
        "producer_linger_ms": settings.producer_linger_ms,
        # Faust's (aiokafka's) 16 KB batch held one pair state (~21 KB of JSON a frame, mostly its outbox of
        # undelivered signals) per batch, and aiokafka has one batch in flight per partition: every frame
        # waited for a broker round trip ("producer buffer full", ~20 % of a replay's time). 512 KB stays
        # under Kafka's 1 MB message.max.bytes even uncompressed; linger still bounds the wait, so live
        # latency is unchanged. Replay of 1 M trades: 11.5 - 14.6 s after the worker's start against
        # 14.8 - 16.9 s (bench/README.md)
        "producer_max_batch_size": 512 * 1024,
        "consumer_auto_offset_reset": "earliest",
        "table_cleanup_interval": 30.0,
        # events queued per agent (Faust: 4,096). A queued frame holds its decoded message (~34 KB for
        # 500 trades): with the pairs in the trades agent its queue fills in a replay, worker RSS after
        # 1 M ticks 313 - 325 MB; 512: 265 - 281 MB, the same throughput (bench/README.md)
        "stream_buffer_maxsize": 512,
    }
    if fix == "batch1":
        # every changelog record its own batch: the broker's "base offset of the last batch + 1" is
        # then exact (costs a round trip per table write and ~1.8 KB of broker memory per record)
        conf["producer_max_batch_size"] = 1
    creds = broker_credentials(settings)
    if creds is not None:
        conf["broker_credentials"] = creds
    return conf
