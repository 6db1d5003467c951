"""``rtqis replay``: real Binance trades (BTCUSDT + ETHUSDT, so pair signals exist) through the real
worker and sink in a namespace of their own. The same input gives the same digest twice (the second run
into the same namespace resets it first) and after a SIGKILLed worker; live topics, groups and the live
DuckDB file are untouched; a bad file is one error line and a non-zero exit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from rtqis.kafka.admin import create_topics
from rtqis.kafka.clients import MessageProducer
from rtqis.kafka.offsets import topic_offsets
from rtqis.replay import ReplayResult, default_namespace, digest, run_replay
from rtqis.schemas import models as m
from rtqis.settings import Settings
from rtqis.sinks.sink import sink_paths
from rtqis.sinks.store import Store
from rtqis.topics import ALERTS, PAIR, TRADES
from tests.conftest import BINANCE_DATA, env_of, make_settings
from tests.test_cli import assert_one_line_error, run_cli

pytestmark = [pytest.mark.broker, pytest.mark.integration]

FILES = [str(next((BINANCE_DATA / "trades").glob(f"{s}-spot-trades-*.csv"))) for s in ("BTCUSDT", "ETHUSDT")]
#: many small frames: the worker takes long enough to be killed part-way (the digest does not depend on it)
SMALL_FRAMES = {"frame_max_ticks": 20}


def _file_sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def baseline(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted replay next to a live system: the live (namespace '') topics hold messages and
    the live DuckDB file exists before it; what they looked like before and after is recorded."""
    tmp = tmp_path_factory.mktemp("replay")
    live = make_settings(bootstrap, tmp, namespace="", **SMALL_FRAMES)
    create_topics(live)
    p = MessageProducer(live)
    sig = m.Alert(time=1, pair="ETHUSDT/BTCUSDT", kind="exit", zscore=0.1, threshold=0.5, spread=0.0, beta=1.0,
                  x=1.0, y=1.0, message="live")  # fmt: skip
    p.send(ALERTS, sig, key=sig.pair)
    p.flush()
    live_db = sink_paths(live)[0]
    with Store(live_db) as st:
        st.insert_alerts([sig])
    names = [t.full_name("") for t in (TRADES, PAIR, ALERTS)]

    def ends() -> dict[tuple[str, int], int]:
        return {(r.topic, r.partition): r.end for r in topic_offsets(live, names)}

    before = {"ends": ends(), "db": _file_sha(live_db), "groups": _live_committed(live, names)}
    res = run_replay(live, FILES)
    after = {"ends": ends(), "db": _file_sha(live_db), "groups": _live_committed(live, names)}
    return {"settings": live, "result": res, "before": before, "after": after, "live_db": live_db}


def _live_committed(s: Settings, names: list[str]) -> list[Any]:
    return [(r.topic, r.committed) for g in ("rtqis", "rtqis-sink") for r in topic_offsets(s, names, group=g)]


def test_replay_summary_and_isolation(baseline: dict[str, Any]) -> None:
    res: ReplayResult = baseline["result"]
    s: Settings = baseline["settings"]
    summary = res.summary()
    assert summary["ticks"] == 34_419  # every trade of both files
    assert summary["signals"] > 500 and summary["candles"] >= 20 and summary["adf"] > 0
    assert set(summary) >= {"ticks", "candles", "signals", "alerts", "seconds", "ticks_per_s", "digest"}
    assert len(res.digest) == 64 and res.digest == digest(res.database)
    assert res.namespace == default_namespace(FILES, ["BTCUSDT", "ETHUSDT"]) and res.namespace.startswith("r")
    # its own DuckDB file, next to the live one
    assert res.database == sink_paths(s.model_copy(update={"namespace": res.namespace}))[0]
    assert res.database != baseline["live_db"]
    # live topics, live groups and the live DuckDB file untouched
    assert baseline["before"] == baseline["after"]
    assert baseline["before"]["ends"][(ALERTS.full_name(""), 0)] == 1
    with Store(baseline["live_db"], read_only=True) as st:
        assert st.counts()["alerts"] == 1 and st.counts()["signals"] == 0


def test_same_input_twice_gives_the_same_digest(baseline: dict[str, Any]) -> None:
    """Into the same namespace again: it is reset first (else the input would be there twice)."""
    first: ReplayResult = baseline["result"]
    again = run_replay(baseline["settings"], FILES)
    assert again.namespace == first.namespace
    assert again.summary() | {"seconds": 0, "ticks_per_s": 0} == first.summary() | {"seconds": 0, "ticks_per_s": 0}
    assert again.digest == first.digest


def test_a_sigkilled_worker_gives_the_same_digest(baseline: dict[str, Any]) -> None:
    first: ReplayResult = baseline["result"]
    res = run_replay(baseline["settings"], FILES, namespace="killed", kill_worker_after=1)
    assert res.worker_restarts == 1  # the worker was killed part-way, not after the end
    assert res.counts == first.counts
    assert res.digest == first.digest


def test_cli_replay_writes_the_summary(baseline: dict[str, Any], tmp_path: Path) -> None:
    s: Settings = baseline["settings"]
    out = tmp_path / "summary.json"
    r = run_cli("replay", *FILES, "--namespace", "cli", "--json", str(out), env=env_of(s), timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got == json.loads(r.stdout)
    assert got["namespace"] == "cli" and got["digest"] == baseline["result"].digest
    assert got["ticks"] == 34_419 and got["ticks_per_s"] > 0


def test_a_bad_file_is_one_line_and_a_non_zero_exit(bootstrap: str, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not market data\n")
    s = make_settings(bootstrap, tmp_path)
    r = run_cli("replay", FILES[0], str(bad), env=env_of(s), timeout=60)
    assert_one_line_error(r, "notes.txt")
    assert not list(tmp_path.glob("rtqis-*.duckdb"))  # nothing started
    r = run_cli("replay", str(tmp_path / "missing.csv"), env=env_of(s), timeout=60)
    assert_one_line_error(r, "missing.csv")
