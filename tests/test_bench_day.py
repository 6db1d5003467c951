"""The day bench's dashboard figures (#22): a real `rtqis ui` against the bench's data and a new headless
Chromium session per mark; nothing of it is left running afterwards."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from rtqis.bench.dashboard_probe import CHROMIUM
from rtqis.bench.day import bench_day
from rtqis.settings import load_settings

pytestmark = [pytest.mark.browser]


def _ui_processes() -> list[psutil.Process]:
    """`rtqis ui` servers started from this process (they run in their own session: look at the cmdlines)."""
    me = psutil.Process()
    out = []
    for p in psutil.process_iter(["cmdline", "ppid"]):
        cmd = p.info["cmdline"] or []
        if p.info["ppid"] == me.pid and cmd[-2:] == ["rtqis", "ui"]:
            out.append(p)
    return out


def test_the_day_bench_measures_the_dashboard_and_stops_it(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: apt-get install -y --no-install-recommends chromium")
    said: list[str] = []
    seen: list[int] = []
    s = load_settings(data_dir=tmp_path)

    def say(line: str) -> None:
        said.append(line)
        seen.extend(p.pid for p in _ui_processes())  # the server runs while the marks are taken

    res = bench_day(s, tmp_path, hours=0.05, rate=5.0, say=say)
    (mark,) = res["marks"]
    assert res["dashboard"] is True and res["dashboard_note"] is None
    assert mark["dashboard_rss_mb"] > 0 and mark["first_chart_ms"] > 0
    assert "dashboard RSS" in said[-1] and "first chart" in said[-1]
    assert seen, "no `rtqis ui` child was running at the mark"
    assert not _ui_processes()
    assert not any(psutil.pid_exists(pid) for pid in seen)  # stopped and reaped
    assert not [c for c in _children() if "chrom" in c or "playwright" in c]  # the browser went too


def _children() -> list[str]:
    out = []
    for c in psutil.Process().children(recursive=True):
        try:
            out.append(" ".join(c.cmdline()))
        except psutil.Error:  # exited meanwhile
            pass
    return out
