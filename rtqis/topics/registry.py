"""Topic registry: name, partitions, key, value schema and clean-up policy of every topic.

Namespaces isolate runs that must not touch the live topics (replays, tests): in namespace ``NS`` the
topic ``ticks.trade`` is ``replay.NS.ticks.trade``; Faust's consumer group and changelog topics take
the namespace too (see :func:`app_id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "TIMESTAMP_CONFIG",
    "ADF",
    "ALERTS",
    "ALL_TOPICS",
    "BOOK",
    "CANDLES_1M",
    "CANDLES_5M",
    "DEADLETTER",
    "DEPTH",
    "LEGS",
    "PAIR",
    "TICKER",
    "TRADES",
    "TABLES",
    "TopicSpec",
    "app_id",
    "by_name",
    "changelog_topics",
    "topic_name",
]

REPLAY_PREFIX = "replay"


#: record timestamps are event times, which run ahead of the wall clock when a feed is generated or
#: replayed faster than real time: Kafka 4 refuses records more than an hour in the future by default
#: (``message.timestamp.after.max.ms``, KIP-937: INVALID_RECORD, the whole batch lost). Every topic
#: RT-QIS creates takes any timestamp (past ones already are: ``before.max.ms`` defaults to unbounded).
TIMESTAMP_CONFIG: dict[str, str] = {"message.timestamp.after.max.ms": str(2**63 - 1)}


@dataclass(frozen=True)
class TopicSpec:
    """One topic. ``partitions=None`` means "the configured partition count" (``RTQIS_PARTITIONS``)."""

    name: str
    value_schema: str
    key: str
    description: str
    partitions: int | None = None
    cleanup: Literal["delete", "compact"] = "delete"
    #: time retention of a "delete" topic; None = none (``retention.ms=-1``). Kafka counts it from each
    #: record's timestamp, which RT-QIS sets to the event time: with 7 days, a file of 2024 trades fed to
    #: the live topics was deleted within a minute (the broker's retention check), before the worker read
    #: it. The disk is bounded by size instead (``RTQIS_TOPIC_RETENTION_MB``, :mod:`rtqis.kafka.admin`).
    retention_ms: int | None = None

    def full_name(self, namespace: str = "") -> str:
        return topic_name(self.name, namespace)

    def partition_count(self, default: int) -> int:
        return self.partitions if self.partitions is not None else default

    def kafka_config(self) -> dict[str, str]:
        """Topic configs for Apache Kafka (the embedded broker ignores them, see README)."""
        conf: dict[str, str] = {"cleanup.policy": self.cleanup, **TIMESTAMP_CONFIG}
        if self.cleanup == "delete":
            conf["retention.ms"] = str(self.retention_ms if self.retention_ms is not None else -1)
        return conf


def topic_name(name: str, namespace: str = "") -> str:
    """The full topic name of ``name`` in ``namespace`` ('' = live)."""
    return f"{REPLAY_PREFIX}.{namespace}.{name}" if namespace else name


TRADES = TopicSpec("ticks.trade", "rtqis.TradeFrame", "symbol", "trade frames: many trades of one symbol")
BOOK = TopicSpec("ticks.book", "rtqis.BookTickerFrame", "symbol", "best bid/ask frames of one symbol")
DEPTH = TopicSpec("ticks.depth", "rtqis.DepthSnapshot", "symbol", "top-N order book, <= 10/s per symbol")
CANDLES_1M = TopicSpec(
    "candles.1m", "rtqis.Candle", "symbol", "1-minute OHLCV: live (closed=false) and closed", cleanup="compact"
)
CANDLES_5M = TopicSpec(
    "candles.5m", "rtqis.Candle", "symbol", "5-minute OHLCV: live (closed=false) and closed", cleanup="compact"
)
PAIR = TopicSpec("analytics.pair", "rtqis.PairSignal", "pair", "hedge ratios, spread and z-score per sample")
ADF = TopicSpec("analytics.adf", "rtqis.AdfResult", "pair", "ADF stationarity of each pair's spread")
TICKER = TopicSpec("analytics.ticker", "rtqis.Ticker", "symbol", "last trade and counts per symbol (worker)")
ALERTS = TopicSpec("alerts", "rtqis.Alert", "pair", "z-score threshold crossings")
LEGS = TopicSpec(
    "pairs.legs", "rtqis.LegSamples", "pair", "worker-internal: per-second leg prices routed to their pair"
)
DEADLETTER = TopicSpec(
    "deadletter", "rtqis.DeadLetter", "stage", "rejected input with the reason and the raw payload", partitions=1
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    TRADES,
    BOOK,
    DEPTH,
    CANDLES_1M,
    CANDLES_5M,
    PAIR,
    ADF,
    TICKER,
    ALERTS,
    LEGS,
    DEADLETTER,
)

_BY_NAME = {t.name: t for t in ALL_TOPICS}

#: Faust tables (name, source topic). Their changelog topics are created with the source topic's
#: partition count before any worker starts (Faust raises PartitionsMismatch otherwise).
TABLES: tuple[tuple[str, TopicSpec], ...] = (
    ("last_trade", TRADES),
    ("candles", TRADES),
    ("pair_state", LEGS),
    ("book_legs", BOOK),
)


def app_id(namespace: str = "") -> str:
    """Faust application id (= consumer group and changelog prefix) of a namespace."""
    return f"rtqis-{REPLAY_PREFIX}-{namespace}" if namespace else "rtqis"


def changelog_topics(namespace: str = "") -> list[str]:
    return [f"{app_id(namespace)}-{table}-changelog" for table, _ in TABLES]


def by_name(name: str, namespace: str = "") -> TopicSpec | None:
    """The spec of a topic given its short or full name (``replay.NS.ticks.trade`` works too)."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    prefix = f"{REPLAY_PREFIX}.{namespace}." if namespace else f"{REPLAY_PREFIX}."
    if name.startswith(prefix):
        rest = name[len(prefix) :]
        if not namespace:
            rest = rest.split(".", 1)[-1]
        return _BY_NAME.get(rest)
    return None
