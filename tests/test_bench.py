"""Smoke test of `rtqis bench` on a tiny input so the harness cannot rot (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtqis.settings import Settings
from tests.conftest import env_of
from tests.test_cli import run_cli

pytestmark = [pytest.mark.broker, pytest.mark.integration]


def test_bench_writes_json_with_every_section(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = run_cli(
        "bench", "--ticks", "3000", "--only", "codec,raw,latency", "--latency-seconds", "3", "--latency-rate", "200",
        "--json", str(out), env=env_of(settings), timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["machine"]["cores"] >= 1 and d["config"]["ticks"] == 3000
    assert d["codec"]["json"]["bytes"] > 0 and d["codec"]["avro"]["decode_us"] > 0
    assert d["raw"]["ticks"] == 5 * 3000 and d["raw_consume_per_s"] > 0
    for hop in ("tick_to_consumer_ms", "tick_to_worker_output_ms"):
        assert d["latency"][hop]["n"] > 0 and d["latency"][hop]["p50"] <= d["latency"][hop]["p99"]
    assert "raw consume" in r.stdout


def test_bench_rejects_unknown_sections() -> None:
    r = run_cli("bench", "--only", "codec,nope")
    assert r.returncode == 1 and "unknown bench section" in r.stderr
