"""Every topic of RT-QIS, declared once. Import the specs from here; never spell a topic name elsewhere."""

from rtqis.topics.registry import (
    ADF,
    ALERTS,
    ALL_TOPICS,
    BOOK,
    CANDLES_1M,
    CANDLES_5M,
    DEADLETTER,
    DEPTH,
    LEGS,
    PAIR,
    TICKER,
    TRADES,
    TopicSpec,
    by_name,
    topic_name,
)

__all__ = [
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
    "TopicSpec",
    "by_name",
    "topic_name",
]
