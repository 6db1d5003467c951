"""Crash drills (#21): the worker, the sink, the producer, the dashboard server and `rtqis up` itself are
SIGKILLed at random moments of a replay of real trades and restarted; at the end the stored candles,
PairSignals, ADF results, alerts and tick archive equal a clean run's over the same input, with no loss
and no duplicate (the rules per table: :data:`tests.drills.TABLES`).

CI size: at least 50 kills over the drills on Tansu; on Apache Kafka (``make test``'s second pass, marker
``both_brokers``) the services drill alone, with 10 kills (each worker restart there waits for Kafka's
group rebalance). ``RTQIS_CHAOS_KILLS=N`` runs N (``make chaos``);
``RTQIS_CHAOS_SEED`` replays a schedule (each drill prints its seed and writes ``<drill>.json`` with
kills and restarts per process, time and the comparison next to its logs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rtqis.kafka.admin import create_topics
from rtqis.kafka.embedded import EmbeddedBroker
from rtqis.kafka.offsets import topic_offsets
from rtqis.process import free_port
from rtqis.settings import Settings, load_settings
from rtqis.topics import TRADES
from tests.conftest import Procs, make_settings, wait_until
from tests.drills import (
    KINDS,
    TABLES,
    DrillReport,
    TableState,
    clean_run,
    compare,
    drill_seed,
    first_difference,
    services_drill,
    total_kills,
    up_drill,
)
from tests.test_sink_restart import _produce, _stored_offsets, _stored_trades, _trades_file, _true_ends

#: short analytics windows and no fee gate, so 650 one-second samples give signals, ADF results and alerts
ANALYTICS: dict[str, Any] = {
    "ols_window": 60,
    "zscore_window": 60,
    "huber_window": 120,
    "huber_refit_every": 10,
    "adf_window": 200,
    "level_window": 300,
    "coint_min": 100,
    "z_enter": 1.5,
    "alert_cooldown_s": 5.0,
    "fee_bps": 0.0,
}
#: the paced replays' frames: at most 5 s of event time each (~300 frames; the worker's cost is per frame)
PACED = {"frame_max_ms": 5000}
#: the share of all kills that go to the `rtqis up` drill (each costs a broker and a worker start)
UP_SHARE = 0.12
#: CI's kills over the drills, by session broker: on Kafka only the services drill runs (the `up` drill
#: starts `up`'s own embedded broker, whatever the session's), with fewer kills to stay in CI's time
CI_KILLS = {"tansu": 50, "kafka": 10}
#: the fewest kills of each kind in the services drill (fewer when the budget is smaller than 4 per kind)
LEAST_PER_KIND = 4


def _up_kills() -> int:
    return max(6, round(total_kills() * UP_SHARE))


def _services_kills(broker_kind: str) -> int:
    """The services drill's kills: all of ``$RTQIS_CHAOS_KILLS`` (or CI's) but the `up` drill's share; on
    Kafka all of them (the `up` drill is not part of the Kafka pass)."""
    total = total_kills(CI_KILLS[broker_kind])
    return total if broker_kind == "kafka" else total - _up_kills()


def _settings(bootstrap: str, tmp: Path, **kw: Any) -> Settings:
    s = make_settings(bootstrap, tmp, **ANALYTICS, **kw)
    create_topics(s)
    return s


@pytest.fixture(scope="module")
def clean(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TableState]:
    tmp = tmp_path_factory.mktemp("clean")
    tables = clean_run(_settings(bootstrap, tmp), tmp)
    counts = {name: t.count for name, t in tables.items()}
    # the input itself: every trade stored, a signal a second, the 1m and 5m bars that closed, alerts
    assert counts["trades"] == 34_419 and counts["signals"] == 650, counts
    assert counts["candles_1m"] >= 20 and counts["candles_5m"] >= 4 and counts["alerts"] >= 1, counts
    assert counts["adf_results"] >= 1, counts
    return tables


def _verdict(report: DrillReport, clean: dict[str, TableState], got: dict[str, TableState], out: Path) -> None:
    report.comparison = compare(clean, got)
    text = report.write(out)
    print(f"\n{report.drill} drill, seed {report.seed}: {out}\n{text}")
    diffs = {n: first_difference(clean[n], got[n]) for n, c in report.comparison.items() if not c["equal"]}
    assert not diffs, f"seed {report.seed}: tables differ from the clean run: {diffs}"
    assert set(report.comparison) == set(TABLES)


@pytest.mark.broker
@pytest.mark.integration
@pytest.mark.both_brokers
def test_services_drill(bootstrap: str, broker_kind: str, tmp_path: Path, clean: dict[str, TableState]) -> None:
    """Separate producer, worker, sink and dashboard: most kills go to the cheap restarts (sink, dashboard),
    each kind at least 4 times (at least a quarter of the kills each when fewer); 0.6 s between kills on
    average."""
    kills = _services_kills(broker_kind)
    least = min(LEAST_PER_KIND, kills // len(KINDS))
    seed = drill_seed()
    print(f"services drill: seed {seed}, {kills} kills")
    report, got = services_drill(
        _settings(bootstrap, tmp_path, **PACED),
        tmp_path,
        seed=seed,
        kills=kills,
        speed=30.0,
        window_s=0.6 * kills,
        weights={"sink": 2.0, "ui": 2.0, "producer": 0.3, "worker": 0.5},
        least={kind: least for kind in KINDS},
    )
    _verdict(report, clean, got, tmp_path / "services.json")
    assert report.total_kills >= kills - sum(report.skipped.values())


@pytest.mark.broker
@pytest.mark.integration
def test_up_drill(tmp_path: Path, clean: dict[str, TableState]) -> None:
    """`rtqis up --source file` killed (or one of its children killed) at random moments, restarted on the
    same ports and data directory: each restart has an empty broker and replays the file again."""
    kills = _up_kills()
    seed = drill_seed()
    print(f"up drill: seed {seed}, {kills} kills")
    settings = load_settings(
        bootstrap_servers="",
        broker="tansu",
        broker_port=free_port(),
        worker_web_port=free_port(),
        ui_port=free_port(),
        data_dir=tmp_path / "var",
        **ANALYTICS,
        **PACED,
    )
    report, got = up_drill(
        settings,
        tmp_path,
        seed=seed,
        kills=kills,
        speed=100.0,
        max_delay_s=10.0,
        least={"up": 3},
        weights={"up": 1.0, "worker": 1.0, "sink": 1.0, "producer": 1.0, "ui": 1.0},
    )
    _verdict(report, clean, got, tmp_path / "up.json")


@pytest.mark.broker
@pytest.mark.integration
def test_sink_reads_a_new_broker_whose_log_already_passed_the_stored_offset(tmp_path: Path) -> None:
    """What the `up` drill hit (0 offset resets logged over 6 restarts, each on a new broker): the new
    broker's log had passed the offsets stored in DuckDB before the sink started, so the sink resumed
    there and skipped the new log's first messages. Equal by luck when the replay is the same file; lost
    when the new log holds other messages, as here."""
    port = free_port()
    s = make_settings(f"127.0.0.1:{port}", tmp_path)
    first, n1 = _trades_file(tmp_path, 0, 0.25)
    second, n2 = _trades_file(tmp_path, 10_000_000, 0.5)  # other trades, a longer log
    procs = Procs(tmp_path)
    try:
        with EmbeddedBroker(port=port, log_path=tmp_path / "broker-a.log"):
            create_topics(s)
            _produce(s, first)
            sink = procs.start(s, "sink", name="sink1")
            wait_until(lambda: _stored_trades(s) == n1, 90, f"{n1} trades stored")
            assert Procs.stop(sink) == 0
            old = _stored_offsets(s)
        with EmbeddedBroker(port=port, log_path=tmp_path / "broker-b.log"):
            create_topics(s)
            _produce(s, second)
            ends = _true_ends(s, list(old))
            assert all(ends[k] > old[k] for k in old), (old, ends)  # the new log is past the stored offsets
            sink = procs.start(s, "sink", name="sink2")
            group = f"rtqis-sink-{s.namespace}"
            trades = [TRADES.full_name(s.namespace)]
            wait_until(lambda: sum(r.lag or 0 for r in topic_offsets(s, trades, group=group)) == 0, 90, "the sink")
            assert Procs.stop(sink) == 0
            assert _stored_trades(s) == n1 + n2, procs.log_of(sink)[-3000:]
    finally:
        procs.stop_all()
