"""Smoke test of `rtqis bench` on a tiny input so the harness cannot rot (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtqis.bench.latency import latency_median
from rtqis.settings import Settings
from tests.conftest import env_of
from tests.test_cli import assert_one_line_error, run_cli

pytestmark = [pytest.mark.broker, pytest.mark.integration]


def test_bench_writes_json_with_every_section(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = run_cli(
        "bench", "--ticks", "3000", "--runs", "1", "--latency-seconds", "3", "--latency-rate", "200",
        "--latency-runs", "1", "--json", str(out), env=env_of(settings), timeout=400,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["machine"]["cores"] >= 1 and d["config"]["ticks"] == 3000
    assert d["versions"]["faust-streaming"] == "0.15.3" and d["versions"]["librdkafka"].count(".") == 2
    assert d["codec"]["json"]["bytes"] > 0 and d["codec"]["avro"]["decode_us"] > 0
    assert d["raw"]["ticks"] == 3000 and d["raw_consume_per_s"] > 0
    # the keys the benchmark issue names
    assert d["e2e_ticks_per_s"] > 0 and d["e2e"]["trades_produced"] == 3000 and d["e2e"]["signals"] > 0
    assert d["worker_rss_mb"] > 0 and d["e2e"]["sink_rss_mb"] > 0
    for path in ("candle", "signal"):
        assert d["latency_ms"][path]["n"] > 0 and d["latency_ms"][path]["p50"] <= d["latency_ms"][path]["p99"]
    assert d["latency"]["runs"] == d["config"]["latency_runs"] == 1 and len(d["latency"]["per_run"]) == 1
    assert [(x["pairs"], x["partitions"], x["workers"]) for x in d["scaling"]] == [
        (1, 1, 1),
        (100, 1, 1),
        (1, 4, 1),
        (1, 4, 2),
    ]
    assert d["scaling"][1]["symbols"] == 15 and d["cost_100_pairs_vs_1"] > 0
    assert d["latency_100_pairs"]["pairs"] == 100 and d["latency_100_pairs"]["signal"]["n"] > 0
    assert d["kernels"]["rolling_ols_us"] > 0 and d["kernels"]["kalman_100_pairs_us"] > 0
    assert "end to end" in r.stdout and "raw consume" in r.stdout
    # the closing table: every target with its figure
    e = d["e2e"]
    assert e["worker_rss_mb_min"] <= d["worker_rss_mb"] == e["worker_rss_mb_median"] <= e["worker_rss_mb_max"]
    assert 0 < e["worker_rss_anon_mb"] < e["worker_rss_mb"]
    table = r.stdout[r.stdout.index("median (min - max)") :]
    for row in ("end to end", "worker RSS after the run", "100 pairs against 1", "latency candle", "latency signal"):
        assert row in table, row
    assert table.count(": met") + table.count(": missed") == 5
    assert f"{d['e2e_ticks_per_s']:,.0f}" in table and f"{d['cost_100_pairs_vs_1']:.1f}x" in table


def test_latency_runs_combine_into_per_path_medians() -> None:
    def run(p99: float) -> dict:
        empty = dict.fromkeys(
            ("tick_to_consumer_ms", "tick_to_worker_output_ms", "sample_to_leg_ms", "leg_to_signal_ms"), {}
        )
        path = {"p50": p99 / 2, "p95": p99 - 1, "p99": p99, "max": p99 + 5, "n": 60}
        return empty | {"candle": path, "signal": dict(path, p99=p99 * 2), "pairs": 1}

    said: list[str] = []
    out = latency_median([run(40.0), run(90.0), run(30.0)], said.append)
    assert out["runs"] == 3 and len(out["per_run"]) == 3 and out["pairs"] == 1
    assert out["candle"] == {
        "p50": 20.0,
        "p95": 39.0,
        "p99": 40.0,
        "max": 95.0,
        "n": 180,
        "p99_min": 30.0,
        "p99_max": 90.0,
    }
    assert out["signal"]["p99"] == 80.0 and out["signal"]["p99_max"] == 180.0
    assert out["sample_to_leg_ms"] == {} and any("median of 3 runs: signal" in line for line in said)


def test_bench_rejects_unknown_sections() -> None:
    r = run_cli("bench", "--only", "codec,nope")
    assert r.returncode == 1 and "unknown bench section" in r.stderr


def test_bench_soak_reports_rss_growth_per_process(settings: Settings, tmp_path: Path) -> None:
    """The opt-in soak on a few seconds: RSS samples of the worker and the sink, and their growth."""
    out = tmp_path / "soak.json"
    r = run_cli(
        "bench", "--only", "soak", "--soak-seconds", "6", "--latency-rate", "200", "--json", str(out),
        env=env_of(settings), timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    soak = json.loads(out.read_text())["soak"]
    assert soak["seconds"] == 6 and len(soak["samples"]) >= 3
    for proc in ("worker", "sink"):  # and the broker's, when bench starts it (here the session's broker runs)
        assert soak[proc]["peak_mb"] >= soak[proc]["end_mb"] > 50, proc
        assert all(x[proc] > 0 for x in soak["samples"])
        assert isinstance(soak[proc]["flat"], bool) and isinstance(soak[proc]["slope_mb_per_min"], float)
    assert "soak worker RSS" in r.stdout


def test_bench_rejects_bad_numbers() -> None:
    assert_one_line_error(run_cli("bench", "--only", "soak", "--soak-seconds", "0"), "--soak-seconds", "> 0")
    assert_one_line_error(run_cli("bench", "--latency-rate", "fast"), "--latency-rate", "'fast'")


def test_bench_signals_runs_the_evaluation_without_a_broker(tmp_path: Path) -> None:
    """`rtqis bench --only signals` (opt-in): the #20 evaluation, its figures in the JSON (values not judged)."""
    from rtqis.bench import DEFAULT_SECTIONS, OPTIONAL_SECTIONS
    from rtqis.evaluation import TARGETS

    assert "signals" in OPTIONAL_SECTIONS and "signals" not in DEFAULT_SECTIONS
    out = tmp_path / "signals.json"
    env = {"RTQIS_DATA_DIR": str(tmp_path / "var"), "RTQIS_BROKER_PORT": "1"}  # no broker is started
    r = run_cli(
        "bench", "--only", "signals", "--signals-seeds", "1", "--signals-hours", "1.5", "--json", str(out),
        env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["config"]["broker"] == "none" and (d["config"]["signals_seeds"], d["config"]["signals_hours"]) == (1, 1.5)
    sig = d["signals"]
    assert (sig["seeds"], sig["hours"], sig["eval_hours"]) == (1, 1.5, 0.5)
    assert set(TARGETS) - {"ewa_ewc_sharpe"} <= set(sig)  # EWA/EWC only with $RTQIS_REFERENCE_DATA
    assert sig["targets"] == len(TARGETS) and 0 <= sig["targets_met"] <= len(TARGETS)
    assert "codec" not in d and "e2e" not in d
    assert "| corr_z_spread |" in r.stdout and "targets met" in r.stdout
    bad = run_cli("bench", "--only", "signals", "--signals-hours", "1", env=env, timeout=60)
    assert_one_line_error(bad, "--signals-hours must exceed 1")
