"""The sink after the broker's log went back: a new memory-only broker on the same port (or a recreated
topic) starts its offsets at 0 again, below the offsets the sink stored in DuckDB. The sink must notice,
say so in one warning, read the new log from its beginning and store the new broker's offsets; a
restart on the same broker must still resume exactly where it stopped (issue 21). A new broker whose log
already passed the stored offset is told apart by the fingerprint of the last stored message.

Each partition's offset is stored with the fingerprint of the message at that offset minus one (schema
v4): the tests below check its migration, the pure rules and a real broker."""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import TopicPartition

from rtqis.errors import BrokerError
from rtqis.kafka.admin import create_topics
from rtqis.kafka.embedded import EmbeddedBroker
from rtqis.kafka.offsets import partition_bounds
from rtqis.process import free_port
from rtqis.settings import Settings
from rtqis.sinks.history import open_history
from rtqis.sinks.schema import MIGRATIONS
from rtqis.sinks.sink import NO_MESSAGE, SinkStats, resume_offsets, sink_paths
from rtqis.sinks.store import Store
from tests.conftest import Procs, env_of, make_settings, wait_until
from tests.test_candles_pipeline import UM_ETH
from tests.test_cli import run_cli

RESET_WARNING = "is beyond the broker's end"
OTHER_LOG_WARNING = "is not the one stored"


def _trades_file(tmp: Path, id_shift: int, fraction: float) -> tuple[Path, int]:
    """The first ``fraction`` of the real ETH trades with ids moved by ``id_shift`` (new trades, new rows),
    written under the original name (the symbol comes from it); (path, number of trades)."""
    header, *lines = gzip.decompress(UM_ETH.read_bytes()).decode().splitlines()
    lines = lines[: int(len(lines) * fraction)]
    out = []
    for line in lines:
        tid, rest = line.split(",", 1)
        out.append(f"{int(tid) + id_shift},{rest}")
    d = tmp / f"shift{id_shift}"
    d.mkdir()
    path = d / UM_ETH.name
    path.write_bytes(gzip.compress(("\n".join([header, *out]) + "\n").encode()))
    return path, len(out)


def _produce(s: Settings, path: Path) -> None:
    r = run_cli("produce", "file", str(path), env=env_of(s), timeout=120)
    assert r.returncode == 0, r.stderr


def _stored_trades(s: Settings) -> int:
    try:
        with open_history(s, wait_s=0) as st:  # the running sink answers, or the file when none runs
            return int(st.counts()["trades"])
    except Exception:  # noqa: BLE001 - no history yet, or the sink is starting
        return 0


def _stored_offsets(s: Settings) -> dict[tuple[str, int], int]:
    with Store(sink_paths(s)[0], read_only=True) as st:
        return st.load_offsets()


def _true_ends(s: Settings, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    return {k: end for k, (_, end) in partition_bounds(s, keys).items()}


@pytest.mark.broker
@pytest.mark.integration
def test_sink_reads_a_new_broker_from_its_beginning(tmp_path: Path, procs: Procs) -> None:
    port = free_port()
    s = make_settings(f"127.0.0.1:{port}", tmp_path, frame_max_ticks=50)
    first, n1 = _trades_file(tmp_path, 0, 1.0)
    second, n2 = _trades_file(tmp_path, 10_000_000, 0.5)
    third, n3 = _trades_file(tmp_path, 20_000_000, 0.25)

    with EmbeddedBroker(port=port, log_path=tmp_path / "broker-a.log"):
        create_topics(s)
        _produce(s, first)
        sink1 = procs.start(s, "sink", name="sink1")
        wait_until(lambda: _stored_trades(s) == n1, 90, f"{n1} trades stored")
        assert Procs.stop(sink1) == 0
        # (c) the same broker: the sink resumes exactly where it stopped, no reset
        sink2 = procs.start(s, "sink", name="sink2")
        _produce(s, second)
        wait_until(lambda: _stored_trades(s) == n1 + n2, 90, f"{n1 + n2} trades stored")
        assert Procs.stop(sink2) == 0
        assert RESET_WARNING not in procs.log_of(sink2)
        old = _stored_offsets(s)
        assert old and old == _true_ends(s, list(old))  # Tansu's understated end must not look like a reset

    # a fresh broker on the same port knows none of it: its offsets start at 0 again
    with EmbeddedBroker(port=port, log_path=tmp_path / "broker-b.log"):
        create_topics(s)
        _produce(s, third)
        new_ends = _true_ends(s, list(old))
        assert any(new_ends[k] < old[k] for k in old)  # the log went back below the stored offsets
        sink3 = procs.start(s, "sink", name="sink3")
        # (a) the new trades are stored within a bounded time, and the sink said why it re-read
        wait_until(lambda: _stored_trades(s) == n1 + n2 + n3, 60, f"{n1 + n2 + n3} trades stored after the new broker")
        assert Procs.stop(sink3) == 0
        log3 = procs.log_of(sink3)
        resets = [line for line in log3.splitlines() if RESET_WARNING in line]
        assert resets, log3[-2000:]
        assert len(resets) == sum(1 for k in old if new_ends[k] < old[k])  # one line per partition
        (topic, part) = next(k for k in old if new_ends[k] < old[k])
        assert f"{topic}[{part}]" in log3 and f"stored offset {old[(topic, part)]}" in log3
        # (b) DuckDB now holds the new broker's offsets
        assert _stored_offsets(s) == _true_ends(s, list(old))


Bounds = Callable[[Settings, list[tuple[str, int]]], dict[tuple[str, int], tuple[int, int]]]


def _bounds(found: dict[tuple[str, int], tuple[int, int]]) -> Bounds:
    return lambda _s, keys: {k: found[k] for k in keys if k in found}


def test_resume_offsets_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Pure rules, with the broker's answer given: in range -> as stored; beyond the end -> earliest and a
    reset; below the earliest -> earliest and the loss counted; no stored offset -> untouched."""
    s = make_settings("127.0.0.1:1", tmp_path)
    stored = {("a", 0): 5, ("a", 1): 50, ("a", 2): 3, ("a", 3): 10}
    found = {("a", 0): (0, 5), ("a", 1): (0, 7), ("a", 2): (8, 20), ("a", 3): (0, 10), ("a", 4): (0, 9)}
    parts = [TopicPartition("a", p) for p in range(5)]
    stats = SinkStats()
    with caplog.at_level(logging.WARNING, logger="rtqis.sinks.sink"):
        resume_offsets(s, parts, stored, stats, bounds=_bounds(found))
    assert [tp.offset for tp in parts[:4]] == [5, 0, 8, 10]
    assert parts[4].offset == TopicPartition("a", 4).offset  # left to auto.offset.reset
    assert stats.offset_resets == 1 and stats.lost_to_retention == 5
    assert stored == {("a", 0): 5, ("a", 1): 0, ("a", 2): 8, ("a", 3): 10}
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert "a[1]: the stored offset 50 is beyond the broker's end 7" in msgs[0]
    assert "a[2]: 5 messages were lost to retention" in msgs[1]


def test_resume_offsets_without_an_answer_keeps_the_stored_offsets(tmp_path: Path) -> None:
    def no_broker(_s: Settings, _k: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        raise BrokerError("no broker")

    stored = {("a", 0): 42}
    parts = [TopicPartition("a", 0)]
    stats = SinkStats()
    resume_offsets(make_settings("127.0.0.1:1", tmp_path), parts, stored, stats, bounds=no_broker)
    assert parts[0].offset == 42 and stats == SinkStats()


@pytest.mark.broker
@pytest.mark.integration
def test_sink_reads_a_new_broker_whose_log_passed_the_stored_offset_from_its_beginning(
    tmp_path: Path, procs: Procs
) -> None:
    """A fresh broker already holds more messages than the old one had when the sink starts: the stored
    offsets are within its log, so only the fingerprints tell the logs apart (it skipped them before)."""
    port = free_port()
    s = make_settings(f"127.0.0.1:{port}", tmp_path, frame_max_ticks=50)
    small, n1 = _trades_file(tmp_path, 0, 0.25)
    big, n2 = _trades_file(tmp_path, 10_000_000, 1.0)

    with EmbeddedBroker(port=port, log_path=tmp_path / "broker-a.log"):
        create_topics(s)
        _produce(s, small)
        sink1 = procs.start(s, "sink", name="sink1")
        wait_until(lambda: _stored_trades(s) == n1, 90, f"{n1} trades stored")
        assert Procs.stop(sink1) == 0
        old = _stored_offsets(s)
        assert old

    with EmbeddedBroker(port=port, log_path=tmp_path / "broker-b.log"):
        create_topics(s)
        _produce(s, big)
        new_ends = _true_ends(s, list(old))
        assert all(new_ends[k] > old[k] for k in old)  # the new log passed every stored offset
        sink2 = procs.start(s, "sink", name="sink2")
        wait_until(lambda: _stored_trades(s) == n1 + n2, 60, f"{n1 + n2} trades stored after the new broker")
        assert Procs.stop(sink2) == 0
        log2 = procs.log_of(sink2)
        resets = [line for line in log2.splitlines() if OTHER_LOG_WARNING in line]
        assert len(resets) == len(old), log2[-2000:]  # one line per partition
        (topic, part), off = next(iter(old.items()))
        assert f"{topic}[{part}]: the stored offset {off} is within the broker's log" in log2
        assert _stored_offsets(s) == _true_ends(s, list(old))
        # and a restart on this broker resumes where it stopped: the fingerprints match, no reset
        sink3 = procs.start(s, "sink", name="sink3")
        wait_until(lambda: "sink writing" in procs.log_of(sink3), 30, "sink3 to start")
        time.sleep(8)  # joined its group and checked its offsets
        assert Procs.stop(sink3) == 0
        assert "from its beginning" not in procs.log_of(sink3)
        assert _stored_trades(s) == n1 + n2


def _prints(found: dict[tuple[str, int], tuple[int, str]]) -> Callable[..., dict[tuple[str, int], tuple[int, str]]]:
    return lambda _s, wanted: {k: found[k] for k in wanted if k in found}


def test_resume_offsets_compares_the_last_stored_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Within the log: same fingerprint at offset - 1 -> as stored; another one, or no message there
    -> earliest and a reset; no fingerprint, or the stored offset at the earliest -> as stored, unread;
    no answer in time -> as stored, with a warning."""
    s = make_settings("127.0.0.1:1", tmp_path)
    stored = {("a", 0): 5, ("a", 1): 7, ("a", 2): 9, ("a", 3): 4, ("a", 4): 2, ("a", 5): 6}
    found = {k: (0, 20) for k in stored} | {("a", 4): (2, 20)}
    prints = {("a", 0): (1, "x"), ("a", 1): (1, "y"), ("a", 2): (1, "z"), ("a", 4): (1, "w"), ("a", 5): (1, "v")}
    asked: list[dict[tuple[str, int], int]] = []

    def read(_s: Settings, wanted: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], tuple[int, str]]:
        asked.append(dict(wanted))
        # a[2]: the first message is after 8; a[5]: no answer
        return _prints({("a", 0): (1, "x"), ("a", 1): (1, "other"), ("a", 2): NO_MESSAGE})(_s, wanted)

    parts = [TopicPartition("a", p) for p in range(6)]
    stats = SinkStats()
    with caplog.at_level(logging.WARNING, logger="rtqis.sinks.sink"):
        resume_offsets(s, parts, stored, stats, bounds=_bounds(found), fingerprints=prints, read_prints=read)
    # a[3] has no fingerprint, a[4] is at the start: not read
    assert asked == [{("a", 0): 4, ("a", 1): 6, ("a", 2): 8, ("a", 5): 5}]
    assert [tp.offset for tp in parts] == [5, 0, 0, 4, 2, 6]
    assert stats.offset_resets == 2 and stats.lost_to_retention == 0
    assert stored == {("a", 0): 5, ("a", 1): 0, ("a", 2): 0, ("a", 3): 4, ("a", 4): 2, ("a", 5): 6}
    assert set(prints) == {("a", 0), ("a", 4), ("a", 5)}  # a reset partition's fingerprint is gone with its offset
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 3
    assert "could not read the last stored message of [('a', 5)]" in msgs[0]
    msgs = msgs[1:]
    assert msgs[0].startswith("a[1]: the stored offset 7 is within the broker's log (end 20) but its message at 6")
    assert "reading this partition again from its beginning (offset 0)" in msgs[0]


def test_resume_offsets_keeps_the_offsets_when_the_messages_cannot_be_read(tmp_path: Path) -> None:
    def no_answer(_s: Settings, _w: object) -> dict[tuple[str, int], tuple[int, str]]:
        raise BrokerError("timed out")

    stored = {("a", 0): 5}
    parts = [TopicPartition("a", 0)]
    stats = SinkStats()
    s = make_settings("127.0.0.1:1", tmp_path)
    resume_offsets(
        s,
        parts,
        stored,
        stats,
        bounds=_bounds({("a", 0): (0, 9)}),
        fingerprints={("a", 0): (1, "x")},
        read_prints=no_answer,
    )
    assert parts[0].offset == 5 and stats == SinkStats()


def test_offsets_are_stored_with_their_fingerprints_and_a_v3_file_migrates(tmp_path: Path) -> None:
    path = tmp_path / "v3.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL,"
            " description VARCHAR NOT NULL)"
        )
        for mig in MIGRATIONS[:3]:
            for stmt in mig.statements:
                con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?, 0, 'old')", [mig.version])
        con.execute("INSERT INTO consumer_offsets VALUES ('ticks.trade', 0, 42, 0)")
    with Store(path) as st:
        assert st.schema_version == 6
        assert st.load_offsets() == {("ticks.trade", 0): 42}
        assert st.load_fingerprints() == {}  # unknown for offsets stored before v4: checked as before
        st.write_batch(
            offsets={("ticks.trade", 0): 50, ("ticks.trade", 1): 3}, fingerprints={("ticks.trade", 0): (7, "ab")}
        )
        assert st.load_fingerprints() == {("ticks.trade", 0): (7, "ab")}
        st.save_offsets({("ticks.trade", 0): 60})  # an offset without its fingerprint: unknown again
        assert st.load_offsets() == {("ticks.trade", 0): 60, ("ticks.trade", 1): 3}
        assert st.load_fingerprints() == {}
