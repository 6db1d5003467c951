"""The topic registry: every topic declared once, with a key its messages carry, a schema the codec
knows, the right partitions and clean-up; namespaces (``replay.NS.*``) that isolate runs."""

from __future__ import annotations

import re

import pytest

import rtqis.topics as topics
from rtqis.schemas.registry import FRAME_TYPES, MODELS
from rtqis.topics import registry
from rtqis.topics.registry import (
    ALL_TOPICS,
    TABLES,
    TIMESTAMP_CONFIG,
    TopicSpec,
    app_id,
    by_name,
    changelog_topics,
    topic_name,
)


def _declared() -> dict[str, TopicSpec]:
    """Every TopicSpec bound to a module-level name in the registry."""
    return {k: v for k, v in vars(registry).items() if isinstance(v, TopicSpec)}


def test_every_declared_topic_is_registered_once() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    assert len({id(t) for t in ALL_TOPICS}) == len(ALL_TOPICS)
    # a spec declared in the registry but left out of ALL_TOPICS would never be created
    assert {id(t) for t in _declared().values()} == {id(t) for t in ALL_TOPICS}


def test_the_package_exports_the_registry_specs_themselves() -> None:
    for name, spec in _declared().items():
        assert getattr(topics, name) is spec, name
        assert name in topics.__all__ and name in registry.__all__, name


def test_the_core_topics_and_their_names() -> None:
    assert topics.TRADES.name == "ticks.trade" and topics.BOOK.name == "ticks.book"
    assert topics.CANDLES_1M.name == "candles.1m" and topics.CANDLES_5M.name == "candles.5m"
    assert topics.PAIR.name == "analytics.pair" and topics.TICKER.name == "analytics.ticker"
    assert topics.DEADLETTER.name == "deadletter"
    for t in ALL_TOPICS:
        assert re.fullmatch(r"[a-z0-9]+(\.[a-z0-9]+)*", t.name), t.name
        assert t.description.strip(), t.name


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=lambda t: t.name)
def test_schema_is_known_and_carries_the_key(spec: TopicSpec) -> None:
    if spec.value_schema in FRAME_TYPES:
        ft = FRAME_TYPES[spec.value_schema]
        fields = set(ft.row.model_fields)
        assert spec.key == "symbol"  # a frame holds the rows of one symbol
    else:
        assert spec.value_schema in MODELS, spec.value_schema
        fields = set(MODELS[spec.value_schema].model_fields)
    assert spec.key in fields, (spec.name, spec.key)


def test_partitions_follow_the_setting_except_the_deadletter() -> None:
    for t in ALL_TOPICS:
        if t is topics.DEADLETTER:
            assert t.partitions == 1 and t.partition_count(8) == 1
        else:
            assert t.partitions is None and t.partition_count(8) == 8 and t.partition_count(1) == 1, t.name


def test_candles_are_compacted_and_the_rest_have_no_time_retention() -> None:
    # record timestamps are event times: a time retention would expire replayed or file-fed history at once
    for t in ALL_TOPICS:
        conf = t.kafka_config()
        if t.name.startswith("candles."):
            assert conf == {"cleanup.policy": "compact", **TIMESTAMP_CONFIG}, t.name  # no retention when compacted
        else:
            assert conf == {"cleanup.policy": "delete", "retention.ms": "-1", **TIMESTAMP_CONFIG}, t.name
    assert {t.name for t in ALL_TOPICS if t.cleanup == "compact"} == {"candles.1m", "candles.5m"}


def test_namespaces_prefix_every_topic_with_replay() -> None:
    assert topic_name("ticks.trade") == "ticks.trade"
    assert topic_name("ticks.trade", "") == "ticks.trade"
    assert topics.TRADES.full_name("bt1") == "replay.bt1.ticks.trade"
    assert topics.DEADLETTER.full_name("x-y_2") == "replay.x-y_2.deadletter"
    live = {t.full_name() for t in ALL_TOPICS}
    spaced = {t.full_name("ns1") for t in ALL_TOPICS}
    assert live == {t.name for t in ALL_TOPICS}
    assert not live & spaced and all(n.startswith("replay.ns1.") for n in spaced)
    assert not spaced & {t.full_name("ns2") for t in ALL_TOPICS}


def test_by_name_reads_short_and_full_names() -> None:
    assert by_name("ticks.trade") is topics.TRADES
    assert by_name("candles.5m", "ns1") is topics.CANDLES_5M  # a short name in any namespace
    assert by_name("replay.ns1.analytics.pair", "ns1") is topics.PAIR
    assert by_name("replay.ns1.analytics.pair") is topics.PAIR  # no namespace given: any namespace
    assert by_name("replay.other.analytics.pair", "ns1") is None  # another run's topic
    assert by_name("nope") is None and by_name("replay.ns1.nope", "ns1") is None
    for t in ALL_TOPICS:
        assert by_name(t.full_name("abc"), "abc") is t


def test_faust_app_and_changelogs_take_the_namespace() -> None:
    assert app_id() == "rtqis" and app_id("ns1") == "rtqis-replay-ns1"
    assert changelog_topics() == [f"rtqis-{table}-changelog" for table, _ in TABLES]
    assert changelog_topics("ns1") == [f"rtqis-replay-ns1-{table}-changelog" for table, _ in TABLES]
    assert {table for table, _ in TABLES} >= {"last_trade", "candles", "pair_state"}
    for _, source in TABLES:  # changelogs are created with their source topic's partitions
        assert source in ALL_TOPICS


def test_live_delete_topics_are_bounded_by_size_and_replays_keep_everything() -> None:
    from rtqis.kafka.admin import _topic_config
    from rtqis.settings import load_settings

    live = load_settings(namespace="", topic_retention_mb=100)
    replay = load_settings(namespace="r1", topic_retention_mb=100)
    assert _topic_config(topics.TRADES, live) == {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": str(100 * 1024 * 1024),
        **TIMESTAMP_CONFIG,
    }
    assert _topic_config(topics.TRADES, replay) == {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        **TIMESTAMP_CONFIG,
    }
    assert _topic_config(topics.CANDLES_1M, live) == {"cleanup.policy": "compact", **TIMESTAMP_CONFIG}
    assert "retention.bytes" not in _topic_config(topics.TRADES, load_settings(namespace="", topic_retention_mb=0))
