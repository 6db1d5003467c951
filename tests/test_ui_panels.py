"""The dashboard's pure parts without a browser or a server: panels (state -> HTML), the session's data path
(seam, turns, page state) and the actions' helpers."""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

import numpy as np
import pytest

from rtqis.analytics.pairs import AdfResult
from rtqis.schemas import models as m
from rtqis.ui import panels as pl
from rtqis.ui import session as ss
from rtqis.ui import tables as tb
from rtqis.ui.actions import csv_name, visible_range
from rtqis.ui.hub import AlertEvent, HubStats
from rtqis.ui.layout import adf_windows, time_zones

PAIR = "ETHUSDT/BTCUSDT"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _alert(t: int, kind: str, z: float, pair: str = PAIR) -> m.Alert:
    return m.Alert(
        time=t, pair=pair, kind=kind, zscore=z, threshold=2.0, spread=0.0, beta=0.5, x=1.0, y=1.0, message="",
    )  # fmt: skip


def _agent_adf(t: int, mean_reverting: bool) -> m.AdfResult:
    return m.AdfResult(
        time=t, pair=PAIR, window=600, stat=-3.5, pvalue=0.01 if mean_reverting else 0.4, lags=2, nobs=597,
        crit_1=-3.4, crit_5=-2.87, crit_10=-2.57, regression="c", mean_reverting=mean_reverting,
    )  # fmt: skip


def _text(h: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", h)).strip()


# ------------------------------------------------------------------------------------------ panels


def test_prices_and_times_are_formatted_for_their_size_and_zone() -> None:
    assert pl.fmt_px(91_234.5) == "91,234.50"
    assert pl.fmt_px(3.14159) == "3.1416"
    assert pl.fmt_px(0.000123456789) == "0.000123457"
    assert pl.fmt_px(float("nan")) == "–"
    assert pl.fmt_time(T0, "UTC") == "00:00:00"
    assert pl.fmt_time(T0, "Asia/Tokyo", with_date=True) == "2026-01-01 09:00:00"


def test_status_bar_shows_connection_rates_age_dead_letters_viewers_and_history_note() -> None:
    st = HubStats(
        bootstrap="127.0.0.1:9092", state="live", connected=True, msgs_per_s=1234.4, ticks_per_s=99.6,
        last_msg_wall_ms=T0 - 2_500, deadletters=3, sessions=2,
    )  # fmt: skip
    h = pl.status_html(st, T0, "no <history>")
    assert 'id="rtqis-status"' in h and pl.GOOD in h
    assert _text(h) == (
        "Broker connected · 127.0.0.1:9092 · live 1,234 msg/s · 100 ticks/s last message 2.5 s ago "
        "dead letters 3 viewers 2 no &lt;history&gt;"
    )
    down = pl.status_html(HubStats(bootstrap="b:1", state="broker unreachable"), T0)
    assert "disconnected" in down and "last message – ago" in _text(down) and pl.BAD in down


def test_board_shows_bid_ask_spread_in_bp_and_the_last_trade_in_the_zone() -> None:
    quotes = {"BTCUSDT": pl.Quote(T0, 90_000.0, 90_009.0, 1.5, 0.25)}
    trades = {"BTCUSDT": pl.LastTrade(T0 + 1_000, 90_001.0, 0.01, True)}
    h = pl.board_html(["BTCUSDT", "ETHUSDT"], quotes, trades, "Europe/Paris")
    text = _text(h)
    assert (
        "BTCUSDT 90,000.00 / 90,009.00 spread 9.0000 (1.00 bp) · 1.5 / 0.25 last 90,001.00 × 0.01 at 01:00:01" in text
    )
    assert "ETHUSDT no quote yet" in text
    assert f'color:{pl.ch.ASK}">90,001.00' in h  # a sell-initiated trade in the ask colour


def test_book_and_trade_tables_give_their_newest_row() -> None:
    book = {k: np.array(v) for k, v in {"t": [1, 2], "bid": [1.0, 2.0], "ask": [1.5, 2.5], "bid_qty": [3.0, 4.0],
                                       "ask_qty": [5.0, 6.0]}.items()}  # fmt: skip
    assert pl.last_quote(book) == pl.Quote(2, 2.0, 2.5, 4.0, 6.0)
    trades = {"t": np.array([5, 6]), "price": np.array([9.0, 8.0]), "qty": np.array([1.0, 2.0]),
              "buyer_maker": np.array([False, True])}  # fmt: skip
    assert pl.last_trade(trades) == pl.LastTrade(6, 8.0, 2.0, True)


def test_adf_card_shows_agent_and_on_demand_verdicts_and_the_error() -> None:
    assert _text(pl.adf_html(None, None, "", "UTC")) == "no periodic ADF result from the pair agent yet"
    r = AdfResult(-4.2, 0.0007, 3, 296, {"1%": -3.45, "5%": -2.87, "10%": -2.57}, True)
    h = pl.adf_html(_agent_adf(T0, False), pl.ManualAdf(T0 + 60_000, 300, r), "no <data>", "UTC")
    assert 'id="rtqis-adf-verdict"' in h and 'id="rtqis-adf-manual"' in h
    assert _text(h) == (
        "random walk pair agent · 00:00:00 · last 600 stat -3.50 vs 5% critical -2.87 · p 0.4000 "
        "mean-reverting on demand · 00:01:00 · last 300 stat -4.20 vs 5% critical -2.87 · p 0.0007 · 3 lags "
        "no &lt;data&gt;"
    )


def test_alert_card_lists_the_last_four_newest_first() -> None:
    assert "no alert for this pair yet" in pl.alerts_html([], "UTC")
    kinds = [("exit", 0.1), ("enter_long_spread", -2.5), ("enter_short_spread", 2.4), ("exit", 0.2)]
    kinds.append(("enter_long_spread", -3.0))
    alerts = [_alert(T0 + i * 1000, k, z) for i, (k, z) in enumerate(kinds)]
    text = _text(pl.alerts_html(alerts, "UTC"))
    assert text == (
        "00:00:04 enter long spread z -3.00 00:00:03 exit z +0.20 00:00:02 enter short spread z +2.40 "
        "00:00:01 enter long spread z -2.50"
    )


def test_toasts_follow_the_page_thresholds() -> None:
    assert pl.toast(_alert(T0, "enter_short_spread", 2.4), 2.0, 0.5) == pl.Toast(
        "warning", f"{PAIR}: z = +2.40 → enter SHORT spread (sell y, buy β·x)"
    )
    assert pl.toast(_alert(T0, "enter_long_spread", -2.4), 2.0, 0.5).kind == "success"  # type: ignore[union-attr]
    assert pl.toast(_alert(T0, "enter_long_spread", -2.4), 3.0, 0.5) is None  # below the page's entry
    assert pl.toast(_alert(T0, "exit", 0.3), 2.0, 0.5).kind == "info"  # type: ignore[union-attr]
    assert pl.toast(_alert(T0, "exit", 0.3), 2.0, 0.2) is None  # above the page's exit


def test_upload_message_names_rows_span_and_how() -> None:
    opens = np.array([T0, T0 + 60_000])
    assert pl.upload_done_text(2, "BTCUSDT", "1m", "klines <csv>", opens, "UTC") == (
        "Imported 2 BTCUSDT 1m candles from 2026-01-01 00:00:00 to 2026-01-01 00:01:00 (UTC) (klines &lt;csv&gt;)."
    )
    assert pl.upload_done_text(0, "BTCUSDT", "1m", "x", np.empty(0), "UTC") == "Imported 0 BTCUSDT 1m candles (x)."


# ------------------------------------------------------------------------------------------ session


def test_turns_alternate_ticks_text_and_one_ready_chart_in_rotation() -> None:
    turns = ss.Turns(("z", "candles", "depth"))
    ready = {"candles", "depth"}
    got = [turns.next(ready.__contains__) for _ in range(8)]
    assert got == [
        ("book", "trades"), ("text",), ("book", "trades"), ("candles",), ("book", "trades"), ("depth",),
        ("book", "trades"), ("candles",),
    ]  # fmt: skip
    assert ss.Turns().next(lambda _c: False) == ("book", "trades")
    idle = ss.Turns()
    idle.turn = 3
    assert idle.next(lambda _c: False) == ()


def test_view_keeps_batches_while_loading_and_drops_those_in_the_snapshot() -> None:
    from rtqis.ui.hub import Batch

    v = ss.ViewLoad()
    v.start_loading()
    assert v.pending is not None
    v.pending.extend([Batch(seq=4), Batch(seq=5), Batch(seq=6)])
    assert [b.seq for b in v.loaded(5)] == [6] and v.pending is None and v.seq == 5


def test_candle_seam_upserts_history_live_and_imports_in_the_live_window() -> None:
    iv = 60_000
    hist = {"open_time": np.array([0, iv, 2 * iv]), "close": np.array([1.0, 2.0, 3.0])}
    live = {"open_time": np.array([2 * iv, 3 * iv]), "close": np.array([3.5, 4.0])}
    imported = {"open_time": np.array([iv]), "close": np.array([2.2])}
    rows = ss.candle_rows(hist, live, imported, iv)
    assert rows["open_time"].tolist() == [0, iv, 2 * iv, 3 * iv]  # no gap, no duplicate at the seam
    assert rows["close"].tolist() == [1.0, 2.2, 3.5, 4.0]  # live over history, the import over both
    far = {"open_time": np.array([0, (ss.CANDLE_ROLLOVER + 5) * iv]), "close": np.array([1.0, 2.0])}
    assert ss.candle_rows(far, {}, None, iv)["open_time"].tolist() == [(ss.CANDLE_ROLLOVER + 5) * iv]
    sig = ss.signal_rows({"time": np.arange(ss.SIGNAL_ROLLOVER + 2)}, {"time": np.array([ss.SIGNAL_ROLLOVER + 2])})
    assert tb.length(sig) == ss.SIGNAL_ROLLOVER and int(sig["time"][-1]) == ss.SIGNAL_ROLLOVER + 2
    assert ss.newest(sig, "time") == ss.SIGNAL_ROLLOVER + 2 and ss.newest({}, "time") == 0


def test_upsert_tail_patches_drawn_keys_and_streams_new_ones_with_rollover() -> None:
    calls: list[tuple[str, object, object]] = []
    src = SimpleNamespace(
        data={"t": [10, 20], "v": [1.0, 2.0]},
        patch=lambda p: calls.append(("patch", p, None)),
        stream=lambda s, rollover: calls.append(("stream", {k: v.tolist() for k, v in s.items()}, rollover)),
    )
    new = {"t": np.array([20, 30]), "v": np.array([2.5, 3.0])}
    ss.upsert_tail(src, new, "t", 100)
    assert calls == [("patch", {"t": [(1, 20)], "v": [(1, 2.5)]}, None), ("stream", {"t": [30], "v": [3.0]}, 100)]
    assert all(type(v) is not np.float64 for _, v in calls[0][1]["v"])  # type: ignore[index]
    calls.clear()
    ss.upsert_tail(src, new, "t", 100, patch=False)
    assert [c[0] for c in calls] == ["stream"]


def test_page_state_keeps_the_newest_adf_and_each_alert_of_its_pair_once() -> None:
    st = ss.PageState(pair=PAIR)
    st.history(
        [_agent_adf(T0, True), _agent_adf(T0 + 60_000, False)],
        [_alert(T0, "exit", 0.1)],
        [AlertEvent(_alert(T0, "exit", 0.1), live=False), AlertEvent(_alert(T0 + 1, "exit", 0.2), live=False),
         AlertEvent(_alert(T0 + 2, "exit", 0.2, pair="X/Y"), live=False)],
    )  # fmt: skip
    assert st.adf_agent is not None and st.adf_agent.time == T0 + 60_000
    assert [a.time for a in st.alerts] == [T0, T0 + 1]
    st.agent_adf(PAIR, _agent_adf(T0, True))  # older: ignored
    st.agent_adf("X/Y", _agent_adf(T0 + 120_000, True))  # another pair: ignored
    assert st.adf_agent.time == T0 + 60_000
    st.cards_dirty = False
    assert not st.alert(_alert(T0 + 1, "exit", 0.2))  # read again after a reconnect
    assert not st.alert(_alert(T0 + 5, "exit", 0.2, pair="X/Y"))
    assert not st.cards_dirty
    assert st.alert(_alert(T0 + 5, "exit", 0.2)) and st.cards_dirty
    for i in range(30):
        st.alert(_alert(T0 + 10 + i, "exit", 0.1))
    assert len(st.alerts) == ss.ALERTS_KEPT
    st.set_pair("X/Y")
    assert (st.pair, st.adf_agent, st.alerts) == ("X/Y", None, [])


def test_page_state_takes_the_last_quote_and_trade_of_a_batch() -> None:
    st = ss.PageState(pair=PAIR)
    st.board_dirty = False
    st.quote("BTCUSDT", {})
    assert not st.board_dirty and st.quotes == {}
    st.trade("BTCUSDT", {"t": np.array([1]), "price": np.array([2.0]), "qty": np.array([3.0]),
                         "buyer_maker": np.array([False])})  # fmt: skip
    assert st.board_dirty and st.trades["BTCUSDT"] == pl.LastTrade(1, 2.0, 3.0, False)


# ------------------------------------------------------------------------------------------ layout, actions


def test_offered_zones_and_adf_windows_include_the_configured_ones() -> None:
    assert time_zones("UTC")[0] == "UTC" and time_zones("Pacific/Auckland")[0] == "Pacific/Auckland"
    assert list(adf_windows(600).values()) == [120, 300, 600, 1800, 3600]
    assert adf_windows(900)["last 900 (pair agent's)"] == 900


def test_downloads_are_named_after_the_visible_range() -> None:
    assert visible_range(SimpleNamespace(start=None, end=5.0)) == (None, None)
    assert visible_range(SimpleNamespace(start=float("nan"), end=5.0)) == (None, None)
    assert visible_range(SimpleNamespace(start=T0 + 30_000.0, end=T0 + 90_000.0), 30_000) == (T0, T0 + 60_000)
    assert csv_name(f"signals-{PAIR}", T0, T0 + 3_600_000) == (
        "signals-ETHUSDT-BTCUSDT-20260101T000000Z-20260101T010000Z.csv"
    )
    assert csv_name("candles-BTCUSDT-1m", None, None) == "candles-BTCUSDT-1m-all-all.csv"


def test_candle_and_signal_seams_take_the_batches_that_arrived_while_history_loaded() -> None:
    hist = {"time": np.array([1_000, 2_000]), "z": np.array([0.1, 0.2])}
    live = {"time": np.array([2_000, 3_000]), "z": np.array([0.25, 0.3])}
    later = [{"time": np.array([3_000, 4_000]), "z": np.array([0.35, 0.4])}, None, {}]
    rows = ss.signal_rows(hist, live, later)
    assert rows["time"].tolist() == [1_000, 2_000, 3_000, 4_000] and rows["z"].tolist() == [0.1, 0.25, 0.35, 0.4]
    iv = 60_000
    hist_c, imported = (
        {"open_time": np.array([0]), "close": np.array([1.0])},
        {"open_time": np.array([iv]), "close": np.array([2.0])},
    )
    c = ss.candle_rows(hist_c, {}, imported, iv, [{"open_time": np.array([iv, 2 * iv]), "close": np.array([2.5, 3.0])}])
    assert c["open_time"].tolist() == [0, iv, 2 * iv] and c["close"].tolist() == [1.0, 2.5, 3.0]


@pytest.mark.filterwarnings("ignore:Widget.name is deprecated:PendingDeprecationWarning")  # the page as served
def test_what_the_browser_receives_when_a_view_is_filled_is_the_server_data_once() -> None:
    """Filling a chart sends one data replacement: Bokeh serialises a held replacement when the events go out,
    so a stream in the same held message would reach the browser twice (a duplicate point, then patches at
    the wrong rows). The events are replayed here as BokehJS applies them."""
    import tempfile

    from bokeh.document import Document
    from bokeh.document.events import ColumnDataChangedEvent, ColumnsPatchedEvent, ColumnsStreamedEvent

    from rtqis.settings import load_settings
    from rtqis.ui.hub import SIGNAL_FIELDS, Batch, HubSnapshot, LiveHub
    from rtqis.ui.page import Dashboard

    s = load_settings(data_dir=tempfile.mkdtemp(), bootstrap_servers="127.0.0.1:1")
    d = Dashboard(s, LiveHub(s))
    doc = Document()
    src = d.charts.pairs.sources["z"]
    doc.add_root(d.charts.pairs.zscore)
    events: list[object] = []
    doc.on_change(events.append)

    def sig(times: list[int]) -> tb.Cols:
        rows = [m.PairSignal(time=t, pair=PAIR, x=1.0, y=1.0, zscore=t / 1e3, n_obs=1) for t in times]
        return tb.rows_to_cols(rows, SIGNAL_FIELDS)

    d.signals_view.start_loading()
    assert d.signals_view.pending is not None
    d.signals_view.pending.extend([Batch(seq=2, signals={PAIR: sig([3_000, 4_000])}), Batch(seq=3)])
    snap = HubSnapshot(seq=1, candles={}, signals={PAIR: sig([2_000, 3_000])}, book={}, trades={}, depth={}, adf={},
                       alerts=())  # fmt: skip
    browser: dict[str, list[float]] = {}

    def send() -> None:
        """Unhold (the end of one callback) and apply the events as BokehJS does, serialised now."""
        doc.unhold()
        for e in events:
            if isinstance(e, ColumnDataChangedEvent):
                browser.clear()
                browser.update({k: list(v) for k, v in e.model.data.items()})
            elif isinstance(e, ColumnsStreamedEvent):
                for k, v in e.data.items():
                    browser[k].extend(v)
            elif isinstance(e, ColumnsPatchedEvent):
                for k, patches in e.patches.items():
                    for i, v in patches:
                        browser[k][i] = v
        events.clear()

    doc.hold("combine")  # one callback: the history arrives (pn.io.hold)
    d._fill_signals(sig([1_000, 2_000]), snap)
    send()
    doc.hold("combine")  # the next: a batch, and the turn that draws it
    d._on_batch(Batch(seq=4, signals={PAIR: sig([4_000, 5_000])}))
    d._flush("z")
    send()
    assert browser["t"] == [1_000, 2_000, 3_000, 4_000, 5_000] == list(src.data["t"])
    assert browser["zscore"] == list(src.data["zscore"])


# ------------------------------------------------------------------------------------------ pair cards (#20)


def _sig(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "time": T0, "n_obs": 2000, "zscore": 2.31, "spread_bp": 34.6, "spread_std_bp": 15.0, "hedge": 0.0331,
        "hedge_se": 0.0012, "half_life_s": 58.0, "half_life_se_s": 6.5, "coint": "cointegrated",
        "coint_stat": -4.12, "coint_pvalue": 0.0051, "expected_reversion_bp": 64.7, "round_trip_cost_bp": 41.2,
        "position": -1, "below_cost": 3, "flags": "",
    }  # fmt: skip
    base.update(kw)
    return base


W = pl.Warmup(n=2000, z_needs=300, coint_needs=1800)


def test_hub_and_csv_carry_every_pair_signal_field() -> None:
    from rtqis.ui.data import SIGNAL_CSV_COLUMNS
    from rtqis.ui.hub import SIGNAL_FIELDS

    assert set(SIGNAL_FIELDS) == set(m.PairSignal.model_fields) - {"pair"}
    assert set(SIGNAL_CSV_COLUMNS) == set(m.PairSignal.model_fields)
    for f in ("hedge_se", "half_life_s", "coint", "coint_pvalue", "round_trip_cost_bp", "below_cost", "position"):
        assert f in SIGNAL_FIELDS


def test_coint_card_shows_the_models_verdict_statistic_half_life_and_hedge_with_their_errors() -> None:
    h = pl.coint_html(_sig(), PAIR, W)
    assert 'data-verdict="cointegrated"' in h
    assert html.unescape(_text(h)) == (
        "cointegrated Engle-Granger test of the spread EG stat -4.12 · p-value 0.0051 (MacKinnon; < 0.05: the spread "
        "reverts) half-life 58 s ± 6 s (time for the spread to halve) hedge 0.0331 ± 0.0012 BTC per ETH"
    )
    h = pl.coint_html(_sig(coint="not_cointegrated", coint_pvalue=0.42, half_life_s=9000.0), PAIR, W)
    assert "not cointegrated" in _text(h) and "p-value 0.4200" in _text(h) and "2.5 h" in _text(h)
    assert pl.BAD in h
    # a hedge whose error is over 100 % is not published: said so, not shown as a number
    h = pl.coint_html(_sig(hedge=None, hedge_se=None, flags="hedge_uncertain"), PAIR, W)
    assert "hedge uncertain (SE > 100 %: not published)" in html.unescape(_text(h))


def test_coint_card_says_warming_up_with_the_sample_counts() -> None:
    w = pl.Warmup(n=120, z_needs=300, coint_needs=1800)
    h = pl.coint_html(
        _sig(coint="insufficient_data", coint_stat=None, coint_pvalue=None, half_life_s=None, hedge=None, n_obs=120),
        PAIR,
        w,
    )
    t = _text(h)
    assert t.startswith("warming up: 120 of 1,800 samples (about 28.0 min to go) Engle-Granger test of the spread")
    assert "EG stat – · p-value –" in t and "half-life warming up: 120 of 300 samples" in t
    assert "hedge warming up: 120 of 300 samples" in t
    assert "waiting for the first ETHUSDT/BTCUSDT signal" in _text(pl.coint_html(None, PAIR, w))


def test_signal_card_weighs_expected_reversion_against_the_round_trip_cost() -> None:
    t = _text(pl.signal_html(_sig(), W, "reverse", 2.0, 0.5))
    assert t == (
        "z +2.31 · position SHORT spread spread +34.6 bp from equilibrium · σ 15.0 bp "
        "entry now: expected reversion 64.7 bp vs round trip 41.2 bp (pays) "
        "rule: stop-and-reverse at ±2 · entries withheld below cost: 3"
    )
    h = pl.signal_html(_sig(expected_reversion_bp=20.0, position=0, zscore=-2.1), W, "bands", 2.0, 0.5)
    assert "(below cost)" in _text(h) and "position flat" in _text(h) and "enter at ±2, exit at ±0.5" in _text(h)
    h = pl.signal_html(_sig(zscore=0.4, position=0), W, "reverse", 2.0, 0.5)
    assert "(no entry while |z| < 2)" in html.unescape(_text(h))
    warm = pl.signal_html(_sig(zscore=None, n_obs=42), pl.Warmup(42, 300, 1800), "reverse", 2.0, 0.5)
    assert _text(warm).startswith("warming up: 42 of 300 samples")
    assert "entries withheld below cost: –" in _text(pl.signal_html(_sig(below_cost=None), W, "bands", 2, 0.5))
    assert "no pair signal yet" in pl.signal_html(None, W, "bands", 2, 0.5)


def test_warmup_note_and_latest_signal() -> None:
    cols = {
        "time": np.array([T0, T0 + 1000]), "n_obs": np.array([10, 11]), "zscore": np.array([np.nan, np.nan]),
        "coint": np.array([None, "insufficient_data"], dtype=object),
        "flags": np.array(["", "warming_up"], dtype=object),
    }  # fmt: skip
    last = pl.latest_signal(cols)
    assert last == {"time": T0 + 1000, "n_obs": 11, "zscore": None, "coint": "insufficient_data", "flags": "warming_up"}
    assert pl.latest_signal({}) is None
    w = pl.warmup(last, 300, 1800)
    assert w == pl.Warmup(11, 300, 1800)
    assert pl.warmup_text(last, w) == "warming up: 11 of 300 samples (about 4.8 min to go)"
    assert pl.warmup_text(_sig(), W) == ""
    assert pl.warmup_text(None, W).startswith("waiting")


def test_alert_card_shows_what_an_entry_expects_against_its_cost() -> None:
    a = _alert(T0, "enter_short_spread", 2.2).model_copy(
        update={"spread_bp": 33.0, "expected_reversion_bp": 63.0, "round_trip_cost_bp": 41.0}
    )
    e = _alert(T0 + 1000, "exit", -2.1).model_copy(update={"spread_bp": -31.0})
    assert _text(pl.alerts_html([a, e], "UTC")) == (
        "00:00:01 exit z -2.10 -31 bp 00:00:00 enter short spread z +2.20 63 / 41 bp"
    )


def test_alert_markers_and_hedge_band_for_the_charts() -> None:
    from rtqis.ui import charts as ch

    alerts = [_alert(T0, "enter_long_spread", -2.2), _alert(T0 + 5000, "exit", 2.1), _alert(T0 + 6000, "odd", 0)]
    mk = ch.alert_marks(alerts)
    assert mk["t"].tolist() == [T0, T0 + 5000] and mk["zscore"].tolist() == [-2.2, 2.1]
    assert mk["marker"] == ["triangle", "circle_x"] and mk["color"][0] == ch.BID
    assert ch.alert_marks([])["marker"] == []
    cols = {"time": np.array([1, 2]), "hedge": np.array([0.5, np.nan]), "hedge_se": np.array([0.1, 0.1])}
    band = ch.signal_display(cols, "hedge")
    assert band["hedge_lo"][0] == pytest.approx(0.4) and band["hedge_hi"][0] == pytest.approx(0.6)
    assert np.isnan(band["hedge_lo"][1])
    # rows of an older worker (no #20 columns) draw as gaps, they do not fail
    spread = ch.signal_display({"time": np.array([1])}, "spread")
    assert list(spread) == ["t", "spread_bp", "expected_reversion_bp", "round_trip_cost_bp"]
    assert np.isnan(spread["round_trip_cost_bp"][0])


def test_page_state_keeps_the_newest_signal_and_marks_alerts_dirty() -> None:
    st = ss.PageState(pair=PAIR)
    st.signal({"time": np.array([T0 + 2000]), "zscore": np.array([1.0])})
    st.signal({"time": np.array([T0 + 1000]), "zscore": np.array([9.0])})  # older: ignored
    assert st.last_signal == {"time": T0 + 2000, "zscore": 1.0}
    st.marks_dirty = False
    assert st.alert(_alert(T0, "exit", 0.1)) and st.marks_dirty
    st.set_pair("SOLUSDT/BTCUSDT")
    assert st.last_signal is None
