"""The workerday bench (#22 item 1) on a tiny run: a real `rtqis worker` on the bench's own Apache Kafka, fed
0.05 simulated hours of trades; figures at each (scaled) mark, the JSON written, nothing left running."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import psutil
import pytest

from rtqis.bench.runner import run_bench
from rtqis.bench.workerday import MARK_HOURS, mark_hours
from rtqis.settings import load_settings
from tests.test_cli import assert_one_line_error, run_cli

_JAVA = shutil.which("java")
_JARS = bool(
    os.environ.get("KAFKA_HOME") or shutil.which("mvn") or any(Path.home().glob(".cache/rtqis/kafka-*/.complete"))
)


def test_marks_are_the_day_marks_within_the_run_or_scaled_to_a_short_one() -> None:
    assert mark_hours(24.0) == list(MARK_HOURS) == [1.0, 6.0, 12.0, 24.0]
    assert mark_hours(6.0) == [1.0, 6.0]
    assert mark_hours(8.0) == [1.0, 6.0, 8.0]
    assert mark_hours(1.0) == [1.0]
    assert mark_hours(0.05) == pytest.approx([0.05 / 24, 0.05 / 4, 0.025, 0.05])


def test_workerday_options_reject_bad_numbers() -> None:
    assert_one_line_error(run_cli("bench", "--only", "workerday", "--workerday-hours", "0"), "--workerday-hours", "> 0")
    assert_one_line_error(run_cli("bench", "--only", "workerday", "--workerday-rate", "x"), "--workerday-rate", "'x'")


@pytest.mark.kafka
@pytest.mark.integration
@pytest.mark.skipif(_JAVA is None or not _JARS, reason="Apache Kafka cannot run here (java, or mvn / cached jars)")
def test_workerday_measures_a_real_worker_and_leaves_nothing_running(tmp_path: Path) -> None:
    said: list[str] = []
    seen: dict[int, str] = {}
    before = {c.pid for c in psutil.Process().children(recursive=True)}  # the session's own (e.g. its broker)

    def say(line: str) -> None:
        said.append(line)
        for c in psutil.Process().children(recursive=True):  # the broker and the worker, at each mark
            if c.pid in before:
                continue
            try:
                seen[c.pid] = " ".join(c.cmdline())
            except psutil.Error:
                pass

    out = tmp_path / "workerday.json"
    s = load_settings(data_dir=tmp_path / "var", bootstrap_servers="")  # embedded: the bench starts its own Kafka
    res = run_bench(s, sections=("workerday",), workerday_hours=0.05, workerday_rate=150.0, json_path=out, say=say)

    day = json.loads(out.read_text())["workerday"]
    assert day == json.loads(json.dumps(res["workerday"]))
    assert day["hours"] == 0.05 and day["rate_trades_per_s"] == 150.0 and day["broker"].startswith("Apache Kafka")
    marks = day["marks"]
    assert [m["sim_hour"] for m in marks] == [round(h, 4) for h in mark_hours(0.05)]
    keys = {"sim_hour", "trades", "frames", "wall_s", "produce_s", "worker_rss_mb", "worker_rss_anon_mb",
            "worker_cpu_s", "signals", "broker_rss_mb", "broker_disk_bytes", "broker_disk_by_topic",
            "load_avg_1m"}  # fmt: skip
    for m in marks:
        assert keys <= m.keys()
        assert m["worker_rss_mb"] >= m["worker_rss_anon_mb"] > 0 and m["broker_rss_mb"] > 0
    for a, b in zip(marks, marks[1:], strict=False):  # in order, each one further on
        assert a["sim_hour"] < b["sim_hour"] and a["trades"] < b["trades"] and a["wall_s"] <= b["wall_s"]
        assert a["worker_cpu_s"] <= b["worker_cpu_s"] and a["signals"] <= b["signals"]
    # 0.05 h at 150 trades/s: about 27,000 trades (Poisson arrivals); the worker sampled the pair every second
    assert 25_000 < marks[-1]["trades"] < 29_000 and marks[-1]["signals"] > 100
    assert marks[-1]["broker_disk_bytes"] > 0 and isinstance(marks[-1]["broker_disk_by_topic"], dict)
    assert day["rss_growth_mb"] == round(marks[-1]["worker_rss_mb"] - marks[0]["worker_rss_mb"], 1)
    assert sum(line.startswith("workerday h") for line in said) == len(marks)
    assert any("java" in cmd for cmd in seen.values()) and any("worker" in cmd for cmd in seen.values())
    left = [cmd for pid, cmd in seen.items() if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert not left, left
    (run_dir,) = (tmp_path / "var" / "bench").glob("workerday-*")
    assert (run_dir / "workerday-worker.log").exists() and not (run_dir / "kafka" / "data").exists()
