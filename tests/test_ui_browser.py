"""The dashboard as a trader uses it: real broker, producer, worker, sink and `rtqis ui`, driven by headless
Chromium (Debian's package, through Playwright; no browser download).

History is written into DuckDB before the sink starts (candles just before the first live candle, pair
signals just before the first live signal), so the seam between history and live data is checked exactly:
no gap, no duplicate, keys increasing. Alerts are produced into the broker by the test (an alert needs a
threshold crossing the test cannot time); the order book comes from the synthetic source's ticks.depth.
PairSignals come from the worker's pair agent only: if it publishes none, the test fails, and the pair
cards (cointegration verdict, warm-up counts, z-score) must show what the worker published.

Figures (update rate and tick-to-screen latency in the browser, server CPU and memory with 1 and 10
sessions) are written to var/test-artifacts/ui-metrics.json and printed; they are not asserted.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from rtqis.kafka.admin import create_topics
from rtqis.kafka.clients import MessageProducer
from rtqis.kafka.embedded import EmbeddedBroker
from rtqis.schemas import models as m
from rtqis.settings import Settings
from rtqis.sinks.candle_files import EXPORT_COLUMNS
from rtqis.sinks.history import open_history
from rtqis.sinks.sink import sink_paths
from rtqis.sinks.store import Store
from rtqis.topics import ALERTS, CANDLES_1M, PAIR
from rtqis.ui.data import SIGNAL_CSV_COLUMNS
from tests.conftest import ROOT, Procs, collect, free_port, make_settings, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.integration, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "var" / "test-artifacts"
PAIR_NAME = "ETHUSDT/BTCUSDT"
HISTORY_MINUTES = 90
HISTORY_SIGNALS_S = 20 * 60
STREAM_WINDOW_S = 30.0  # the 30 s of streaming without a long task

# Long tasks (> 50 ms on the main thread), recorded from the first paint on
INIT_JS = """
window.__longtasks = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longtasks.push({start: e.startTime, duration: e.duration});
}).observe({type: 'longtask', buffered: true});
// for the failure message: what ran in slow frames (long animation frames, with script attribution)
window.__loaf = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (e.duration > 50) window.__loaf.push({start: e.startTime,
    duration: e.duration, render: e.renderStart ? e.startTime + e.duration - e.renderStart : 0,
    scripts: e.scripts.map(s => [s.invoker, Math.round(s.duration), Math.round(s.forcedStyleAndLayoutDuration)])});
}).observe({type: 'long-animation-frame', buffered: true});
"""
JS_LEN = "(n) => { const d = window.Bokeh && Bokeh.documents[0]; const s = d && d.get_model_by_name(n); " \
         "return s ? s.get_length() : -1 }"  # fmt: skip
JS_COL = "([n, c]) => Array.from(Bokeh.documents[0].get_model_by_name(n).data[c])"
JS_RANGE = "(n) => { const r = Bokeh.documents[0].get_model_by_name(n); return [r.start, r.end] }"
# Counts data updates per source, and tick-to-screen latency: when new trades are streamed into the browser,
# the newest trade's event time is compared with Date.now() at the next animation frame (drawn).
JS_METER = """
() => {
  const doc = Bokeh.documents[0];
  const m = window.__meter = {t0: performance.now(), updates: {}, latency: []};
  for (const name of ['src-candles', 'src-z', 'src-book', 'src-trades']) {
    const src = doc.get_model_by_name(name);
    m.updates[name] = 0;
    let last = -1;  // a stream and a patch of the same message count once
    const count = () => { const now = performance.now(); if (now - last > 20) m.updates[name] += 1; last = now; };
    src.streaming.connect(count);
    src.patching.connect(count);
    if (name === 'src-trades') {
      src.streaming.connect(() => {
        const t = src.data.t;
        const last = t[t.length - 1];
        requestAnimationFrame(() => m.latency.push(Date.now() - last));
      });
    }
  }
}
"""


def _ms() -> int:
    return time.time_ns() // 1_000_000


def _iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Live:
    settings: Settings
    procs: Procs
    ui: Any
    url: str
    live_candle: int  # open time of the first live BTCUSDT 1m candle
    live_signal: int  # time of the first live PairSignal
    hist_candles: dict[int, dict[str, Any]]
    hist_signals: list[int]
    metrics: dict[str, Any] = field(default_factory=dict)


def _write_history(s: Settings, live_candle: int, live_signal: int) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """90 1m BTCUSDT candles ending just before the first live one, and 20 min of pair signals ending just
    before the first live signal, written into the DuckDB file the sink is about to open."""
    rnd = random.Random(7)
    candles: dict[int, dict[str, Any]] = {}
    price = 90_000.0
    for i in range(HISTORY_MINUTES, 0, -1):
        t = live_candle - i * 60_000
        o = price
        c = o * math.exp(rnd.gauss(0, 4e-4))
        h, lo = max(o, c) * (1 + abs(rnd.gauss(0, 2e-4))), min(o, c) * (1 - abs(rnd.gauss(0, 2e-4)))
        candles[t] = {
            "symbol": "BTCUSDT", "interval": "1m", "open_time": t, "close_time": t + 59_999, "open": o, "high": h,
            "low": lo, "close": c, "volume": rnd.uniform(5, 40), "quote_volume": 0.0, "trades": 100,
            "taker_buy_volume": 1.0, "taker_buy_quote_volume": 1.0, "vwap": (o + c) / 2, "closed": True,
        }  # fmt: skip
        price = c
    signals = []
    times = [live_signal - (HISTORY_SIGNALS_S - i) * 1000 for i in range(HISTORY_SIGNALS_S)]
    z = 0.0
    for t in times:
        z = 0.97 * z + rnd.gauss(0, 0.35)
        x = 90_000 + rnd.gauss(0, 20)
        beta = 0.0333 + rnd.gauss(0, 1e-5)
        signals.append(
            m.PairSignal(
                time=t,
                pair=PAIR_NAME,
                x=x,
                y=beta * x + z,
                ols_beta=beta,
                ols_alpha=0.0,
                kalman_beta=beta,
                kalman_alpha=0.0,
                spread=z,
                spread_ols=z * 1.1,
                zscore=z,
                huber_beta=beta,
                huber_alpha=0.0,
                fair_value=beta * x,
                n_obs=1000,
                flags=[],
            )  # fmt: skip
        )
    with Store(sink_paths(s)[0]) as st:
        st.upsert_candles(list(candles.values()), source="import")
        st.upsert_signals(signals)
    return candles, times


@pytest.fixture(scope="module")
def ui_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of this module's own (unless RTQIS_BOOTSTRAP_SERVERS names one): the session's embedded broker
    holds every topic of the tests before, and late in the suite it keeps a core busy on its own, which
    would be measured as the browser's long tasks rather than the page's."""
    external = os.environ.get("RTQIS_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    b = EmbeddedBroker(port=free_port(), log_path=tmp_path_factory.mktemp("ui-broker") / "broker.log")
    b.start()
    try:
        yield b.bootstrap
    finally:
        b.stop()


@pytest.fixture(scope="module")
def live(ui_broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("ui")
    s = make_settings(ui_broker, tmp / "var")
    create_topics(s)
    procs = Procs(tmp)
    try:
        procs.start(s, "produce", "synthetic", name="producer")
        procs.start(s, "worker", name="worker")
        rows = collect(s, CANDLES_1M.name, lambda rows: any(r["symbol"] == "BTCUSDT" for r in rows), timeout_s=90)
        live_candle = min(r["open_time"] for r in rows if r["symbol"] == "BTCUSDT")
        # the pair agent publishes a PairSignal a second once both legs have traded; none in 120 s: it is broken
        sig = collect(s, PAIR.name, lambda rows: len(rows) >= 1, timeout_s=120)
        live_signal = sig[0]["time"]
        hist_candles, hist_signals = _write_history(s, live_candle, live_signal)
        procs.start(s, "sink", name="sink")
        ui = procs.start(s, "ui", name="ui")
        wait_until(lambda: _port_open(s.ui_port) or ui.poll() is not None, 60, "the dashboard server")
        assert ui.poll() is None, procs.log_of(ui)
        yield Live(
            s, procs, ui, f"http://127.0.0.1:{s.ui_port}/dashboard", live_candle, live_signal, hist_candles,
            hist_signals,
        )  # fmt: skip
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: `make test` installs Debian's chromium package "
            "(apt-get install -y --no-install-recommends chromium)"
        )
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    ctx = pw.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("chromium-profile")),
        executable_path=str(CHROMIUM),
        headless=True,
        args=[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
        viewport={"width": 1600, "height": 1500},
        accept_downloads=True,
    )
    ctx.add_init_script(INIT_JS)
    try:
        yield ctx
    finally:
        ctx.close()
        pw.stop()


def _open(ctx: Any, url: str, *, wait: bool = True) -> Any:
    """A new page on ``url``, once its charts have data (``wait``; else call :func:`_loaded` later)."""
    page = ctx.new_page()
    page.goto(url, wait_until="load" if wait else "commit")
    if wait:
        _loaded(page)
    return page


def _loaded(page: Any, timeout_ms: int = 60_000) -> None:
    page.wait_for_function(f"() => ({JS_LEN})('src-candles') > 0 && ({JS_LEN})('src-z') > 0", timeout=timeout_ms)


# arrival times of the PATCH-DOC messages (one per session update) the main page receives
_PATCH_DOCS: list[float] = []


def _count_patch_docs(ws: Any) -> None:
    def on_frame(payload: str | bytes) -> None:
        if isinstance(payload, str) and "PATCH-DOC" in payload[:300]:  # the header frame of a message
            _PATCH_DOCS.append(time.monotonic())

    ws.on("framereceived", on_frame)


@pytest.fixture(scope="module")
def page(live: Live, browser: Any) -> Iterator[Any]:
    p = browser.new_page()
    p.on("websocket", _count_patch_docs)
    p.goto(live.url)
    _loaded(p)
    yield p
    p.close()


def _len(page: Any, name: str) -> int:
    return int(page.evaluate(JS_LEN, name))


def _col(page: Any, name: str, col: str) -> list[float]:
    return list(page.evaluate(JS_COL, [name, col]))


#: several columns of one source in one evaluation: the source streams between two evaluations
JS_COLS = "([n, cs]) => cs.map(c => Array.from(Bokeh.documents[0].get_model_by_name(n).data[c]))"


def _cols(page: Any, name: str, *cols: str) -> list[list[float]]:
    return [list(c) for c in page.evaluate(JS_COLS, [name, list(cols)])]


def test_charts_start_with_history_and_continue_live_with_an_exact_seam(live: Live, page: Any) -> None:
    # candles: the 90 history bars, then the live ones, one per minute: no gap, no duplicate at the seam
    page.wait_for_function(
        f"() => ({JS_COL})(['src-candles', 'open_time']).includes({live.live_candle})", timeout=60_000
    )
    opens_f, closes = _cols(page, "src-candles", "open_time", "close")  # one snapshot: the source streams
    opens = [int(t) for t in opens_f]
    assert opens[0] <= live.live_candle - (HISTORY_MINUTES - 1) * 60_000, opens[:3]
    assert live.live_candle in opens
    assert all(b - a == 60_000 for a, b in zip(opens, opens[1:], strict=False)), opens
    hist = live.hist_candles
    for t, c in zip(opens, closes, strict=True):
        if t in hist:
            assert c == pytest.approx(hist[t]["close"])
    # signals: the 20 min of history and the live samples after them, times strictly increasing
    ts = [int(t) for t in _col(page, "src-z", "t")]
    assert ts[0] == live.hist_signals[0]
    assert all(b > a for a, b in zip(ts, ts[1:], strict=False))
    assert set(live.hist_signals) <= set(ts)
    # new points arrive while watching: trades, quotes, signals, the live candle
    before = {n: _len(page, n) for n in ("src-trades", "src-book", "src-z")}
    last_sig = ts[-1]
    page.evaluate(JS_METER)
    page.wait_for_function(
        f"""() => ({JS_LEN})('src-trades') > {before["src-trades"]} && ({JS_LEN})('src-book') > {before["src-book"]}
              && window.__meter.updates['src-candles'] > 0""",
        timeout=30_000,
    )
    page.wait_for_function(
        f"() => {{ const t = ({JS_COL})(['src-z', 't']); return t[t.length - 1] > {last_sig} }}", timeout=30_000
    )
    # the order book ladder is drawn from ticks.depth, which the synthetic source publishes
    page.wait_for_function(f"() => ({JS_LEN})('src-bids') > 0 && ({JS_LEN})('src-asks') > 0", timeout=30_000)
    status = page.locator("#rtqis-status").inner_text()
    assert "connected" in status and "msg/s" in status and "dead letters" in status, status


def _set_entry_threshold(page: Any, value: float) -> None:
    page.evaluate(
        """(v) => { for (const m of Bokeh.documents[0].all_models)
                      if (m.title === 'Entry |z| ≥') { m.value = v; return } throw 'no threshold input' }""",
        value,
    )


def _alert(z: float, kind: str, t: int) -> m.Alert:
    return m.Alert(
        time=t, pair=PAIR_NAME, kind=kind, zscore=z, threshold=2.0, spread=z * 1.3, beta=0.0333, x=90_000.0,
        y=3000.0, message=f"test alert z={z}",
    )  # fmt: skip


def test_alerts_pop_up_when_above_the_page_threshold(live: Live, page: Any) -> None:
    # the page's entry threshold decides what pops up: 3.0 here, so z = 2.5 stays quiet and z = -3.5 pops up
    _set_entry_threshold(page, 3.0)
    page.wait_for_function(  # the server applied it: the band moved
        "() => Bokeh.documents[0].get_model_by_name('z-entry').location === 3", timeout=10_000
    )
    p = MessageProducer(live.settings)
    now = _ms()
    p.send(ALERTS, _alert(2.5, "enter_short_spread", now), key=PAIR_NAME)
    p.send(ALERTS, _alert(-3.5, "enter_long_spread", now + 1), key=PAIR_NAME)
    assert p.flush() == 0
    toast = page.locator(".notyf__message").filter(has_text="z = -3.50")
    toast.first.wait_for(timeout=30_000)
    text = toast.first.inner_text()
    assert PAIR_NAME in text and "LONG spread" in text, text
    # same partition, same order: the quiet one arrived first and made no toast
    assert page.locator(".notyf__message").filter(has_text="z = +2.50").count() == 0
    _set_entry_threshold(page, 2.0)


JS_MODEL = "([n, a]) => Bokeh.documents[0].get_model_by_name(n)[a]"


def test_pair_panels_show_what_the_worker_published(live: Live, page: Any) -> None:
    s = live.settings
    # bands where the settings put them: entry lines at the pair agent's threshold (the exit lines exist and
    # are hidden under stop-and-reverse)
    # both lines: the server sets them in one statement, but Bokeh may send the two changes in two
    # messages (CI once read z-entry at 2 while z-entry-low still showed the previous test's -3)
    page.wait_for_function(
        f"""() => Bokeh.documents[0].get_model_by_name('z-entry').location === {s.z_enter}
                  && Bokeh.documents[0].get_model_by_name('z-entry-low').location === {-s.z_enter}""",
        timeout=10_000,
    )
    assert page.evaluate(JS_MODEL, ["z-exit", "location"]) == s.z_exit
    # the alerts produced by the test before are marked on the z chart at their z
    page.wait_for_function(f"() => ({JS_LEN})('src-alerts') >= 2", timeout=30_000)
    assert {2.5, -3.5} <= set(_col(page, "src-alerts", "zscore"))
    # the cards show the worker's numbers: its cointegration verdict and sample counts, its z-score
    time.sleep(2.5)  # a text turn after the newest signal
    coint = page.locator("#rtqis-coint-verdict")
    verdict, head = coint.get_attribute("data-verdict"), coint.inner_text()
    z_now = page.locator("#rtqis-z-now").inner_text()
    warm_z = page.evaluate(JS_MODEL, ["warmup-z", "text"])
    sigs = [r for r in collect(s, PAIR.name, lambda rows: False, 30, until_end=True) if r["pair"] == PAIR_NAME]
    recent = sigs[-60:]
    assert verdict in {r["coint"] for r in recent}, (verdict, recent[-1])
    assert verdict in ("cointegrated", "not_cointegrated", "insufficient_data")
    n_last = sigs[-1]["n_obs"]
    if verdict == "insufficient_data":
        got = re.match(r"warming up: ([\d,]+) of 1,800 samples", head)
        assert got, head
        assert abs(int(got.group(1).replace(",", "")) - n_last) <= 60, (head, n_last)
    if sigs[-1]["zscore"] is None:
        got = re.match(r"warming up: ([\d,]+) of 300 samples", z_now)
        assert got and abs(int(got.group(1).replace(",", "")) - n_last) <= 60, (z_now, n_last)
        assert warm_z.startswith("warming up:"), warm_z
    else:
        shown = {f"z {r['zscore']:+.2f}" for r in recent if r["zscore"] is not None}
        assert z_now in shown, (z_now, sorted(shown)[-5:])
        assert warm_z == ""
    # the hedge band and the cost line are the published numbers, drawn at their sample times
    pub = {r["time"]: r for r in sigs}
    for src, cols in (("src-hedge", ("hedge",)), ("src-spread", ("spread_bp", "round_trip_cost_bp"))):
        t_col, *val_cols = _cols(page, src, "t", *cols)  # one snapshot: the source streams
        ts = [int(t) for t in t_col]
        checked = 0
        for c, vals in zip(cols, val_cols, strict=True):
            for t, v in list(zip(ts, vals, strict=True))[-30:]:
                if t in pub:
                    want = pub[t][c]
                    assert (want is None and (v is None or math.isnan(v))) or v == pytest.approx(want), (src, c, t)
                    checked += 1
        assert checked, f"no published sample drawn on {src}"
    lo, hi, h = _cols(page, "src-hedge", "hedge_lo", "hedge_hi", "hedge")
    assert all(a <= c <= b for a, b, c in zip(lo, hi, h, strict=True) if c is not None and not math.isnan(c))


def test_adf_on_demand_gives_a_verdict(page: Any) -> None:
    page.get_by_role("button", name="Run ADF now").click()
    verdict = page.locator("#rtqis-adf-manual")
    verdict.wait_for(timeout=30_000)
    assert verdict.inner_text() in ("mean-reverting", "random walk")


def test_csv_downloads_hold_the_visible_range(live: Live, page: Any, tmp_path: Path) -> None:
    start, end = page.evaluate(JS_RANGE, "xr-signals")
    with page.expect_download(timeout=30_000) as d:
        page.get_by_role("button", name="PairSignals of the visible range").click()
    rows = list(csv.DictReader(io.StringIO(Path(d.value.path()).read_text())))
    assert rows, "empty signals download"
    assert tuple(rows[0].keys()) == SIGNAL_CSV_COLUMNS
    times = [_iso_ms(r["time"]) for r in rows]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    assert all(math.floor(start) - 1 <= t <= math.ceil(end) + 1 for t in times), (start, end, times[:2], times[-2:])
    in_range = {t for t in live.hist_signals if math.floor(start) + 1 <= t <= math.floor(end) - 1}
    assert in_range <= set(times)  # every history row of the visible range
    assert any(t >= live.live_signal for t in times)  # and the live ones
    assert {r["pair"] for r in rows} == {PAIR_NAME}

    start, end = page.evaluate(JS_RANGE, "xr-candles")
    with page.expect_download(timeout=30_000) as d:
        page.get_by_role("button", name="Candles of the visible range").click()
    rows = list(csv.DictReader(io.StringIO(Path(d.value.path()).read_text())))
    assert tuple(rows[0].keys()) == EXPORT_COLUMNS
    opens = [_iso_ms(r["open_time"]) for r in rows]
    centres = [t + 30_000 for t in opens]
    assert all(start - 1 <= c <= end + 1 for c in centres), (start, end, opens[:2], opens[-2:])
    assert all(b - a == 60_000 for a, b in zip(opens, opens[1:], strict=False))
    for r, t in zip(rows, opens, strict=True):
        if t in live.hist_candles:
            assert float(r["close"]) == pytest.approx(live.hist_candles[t]["close"])
    visible_hist = [t for t in live.hist_candles if start <= t + 30_000 <= end]
    assert set(visible_hist) <= set(opens)


def _upload(page: Any, name: str, body: str) -> None:
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": name, "mimeType": "text/csv", "buffer": body.encode()}]
    )


def test_upload_shows_the_bad_line_and_imports_nothing(live: Live, page: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    bad = (
        "open_time,open,high,low,close,volume\n"
        "2024-08-10T00:00:00Z,100,101,99,100.5,10\n"
        "2024-08-10T00:01:00Z,100,99.5,99,100.5,10\n"  # line 3: high < max(open, close)
        "2024-08-10T00:02:00Z,100,101,99,100.5,10\n"
    )
    _upload(page, f"bad-{tag}.csv", bad)
    msg = page.locator(".rtqis-upload-msg")
    line = msg.get_by_text(re.compile(f"bad-{tag}.csv: line 3"))
    line.wait_for(timeout=30_000)
    text = line.inner_text()
    assert "high < max(open, close)" in text and "nothing was imported" in text, text

    good = "open_time,open,high,low,close,volume\n" + "".join(
        f"2024-08-09T00:0{i}:00Z,{100 + i},{102 + i},{99 + i},{101 + i},{5 + i}\n" for i in range(3)
    )
    _upload(page, f"good-{tag}.csv", good)
    msg.get_by_text("Imported 3 BTCUSDT 1m candles").wait_for(timeout=30_000)
    t0 = _iso_ms("2024-08-09T00:00:00Z")

    def stored(start: int, end: int) -> int:
        with open_history(live.settings) as st:
            return st.candles("BTCUSDT", "1m", start, end).height

    # the good rows reach DuckDB through the running sink; the bad file, sent before, would be there too
    wait_until(lambda: stored(t0, t0 + 180_000) == 3, 60, "the imported candles in DuckDB")
    t_bad = _iso_ms("2024-08-10T00:00:00Z")
    assert stored(t_bad, t_bad + 180_000) == 0


def _favour_the_browser() -> int:
    """Raise Chromium's CPU priority above the back end's (nice -10, we run as root; a no-op otherwise).

    A trader's browser does not share two cores with the broker, four Python services and the test runner:
    on this machine the OS otherwise preempts the renderer in the middle of a ~10 ms frame often enough to
    stretch one to 60 ms now and then, which says nothing about the page. The page's own work is what the
    long-task check measures (its animation-frame scripts: ~6 ms median, ~10 ms p90, ~21 ms max measured
    with a Chrome trace on an idle machine).
    """
    n = 0
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name().startswith("chrom"):
                p.nice(-10)
                n += 1
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            pass
    return n


COUNT_STYLE_READS = """
() => {
  // every forced style read in the page: BokehJS 3.9 did one per visual property per paint (bokeh#15286)
  if (!window.__styleReads) {
    const original = window.getComputedStyle;
    window.__styleReads = 0;
    window.getComputedStyle = function (...args) { window.__styleReads += 1; return original.apply(this, args); };
  }
  window.__styleReads0 = window.__styleReads;
}
"""


def test_streaming_does_not_recompute_styles_per_paint(live: Live, page: Any) -> None:
    """30 s of live streaming: the charts repaint without forcing a style computation per visual property
    (BokehJS 3.9 read every colour, width and font through getComputedStyle on each paint, bokeh#15286,
    which made 50-100 ms main-thread tasks every second with nine charts; the dashboard answers those
    reads itself). Asserted by count, not by time: fewer than 60 style reads per chart update (measured:
    about 15 with the dashboard's answer, about 320 without it).
    The figures measured meanwhile (long tasks, update rate, tick-to-screen latency, server CPU) are
    recorded in ui-metrics.json, not asserted: they depend on what else the machine runs."""
    live.metrics["browser_processes_reniced"] = _favour_the_browser()
    page.evaluate(JS_METER)
    page.evaluate(COUNT_STYLE_READS)
    page.evaluate("() => { window.__lt_from = performance.now() }")
    n0 = len(_PATCH_DOCS)
    proc = psutil.Process(live.ui.pid)
    cpu0, t0 = proc.cpu_times(), time.monotonic()
    psutil.cpu_percent()
    page.wait_for_timeout(STREAM_WINDOW_S * 1000)
    cpu1, t1 = proc.cpu_times(), time.monotonic()
    live.metrics["machine_cpu_percent_while_measuring"] = psutil.cpu_percent()  # all cores: 100 = all busy
    long_tasks = page.evaluate("() => window.__longtasks.filter(t => t.start >= window.__lt_from)")
    slow_frames = page.evaluate("() => window.__loaf.filter(t => t.start >= window.__lt_from)")
    meter = page.evaluate("() => window.__meter")
    style_reads = page.evaluate("() => window.__styleReads - window.__styleReads0")
    secs = t1 - t0
    lat = sorted(meter["latency"])
    live.metrics.update(
        {
            "window_s": round(secs, 1),
            "patch_doc_messages_per_s": round((len(_PATCH_DOCS) - n0) / secs, 1),
            "source_updates_per_s": {k: round(v / secs, 1) for k, v in meter["updates"].items()},
            "tick_to_screen_ms": {
                "n": len(lat),
                "p50": lat[len(lat) // 2] if lat else None,
                "p95": lat[int(len(lat) * 0.95)] if lat else None,
                "max": lat[-1] if lat else None,
            },
            "server_cpu_percent_1_session": round(
                100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / secs, 1
            ),
            "long_tasks": long_tasks,
            "slow_frames": slow_frames,
            "style_reads": style_reads,
        }
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    (ARTIFACTS / "ui-metrics.json").write_text(json.dumps(live.metrics, indent=2))
    updates = sum(meter["updates"].values())
    assert updates > 0 and lat, "no update reached the screen while streaming"
    # measured: ~15 reads per update with the dashboard's answer, ~320 without it (BokehJS's own path)
    assert style_reads < 60 * updates, (
        f"{style_reads} forced style reads for {updates} chart updates in {secs:.0f} s: the per-paint CSS "
        f"lookups of BokehJS are back (long tasks meanwhile: {long_tasks})"
    )


def test_server_memory_with_1_and_10_sessions(live: Live, page: Any, browser: Any) -> None:
    proc = psutil.Process(live.ui.pid)
    rss1 = proc.memory_info().rss
    # all nine navigate first, then are waited for: each loads beside the others loading, not beside the
    # streaming of every page opened before it (one after the other, the test took 123 s; together 57 s)
    extra = [_open(browser, live.url, wait=False) for _ in range(9)]
    try:
        for p in extra:
            _loaded(p, 120_000)
        page.locator("#rtqis-status").filter(has_text="viewers 10").wait_for(timeout=30_000)
        cpu0, t0 = proc.cpu_times(), time.monotonic()
        extra[-1].wait_for_timeout(10_000)
        cpu1, t1 = proc.cpu_times(), time.monotonic()
        rss10 = proc.memory_info().rss
        assert all(_len(p, "src-trades") > 0 for p in extra)
    finally:
        for p in extra:
            p.close()
    live.metrics.update(
        {
            "server_rss_mb_1_session": round(rss1 / 1e6, 1),
            "server_rss_mb_10_sessions": round(rss10 / 1e6, 1),
            "server_cpu_percent_10_sessions": round(
                100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (t1 - t0), 1
            ),
        }
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "ui-metrics.json").write_text(json.dumps(live.metrics, indent=2))
    print("dashboard figures:", json.dumps(live.metrics))
