"""rtqis.client against a real broker: where a subscription starts, commits across restarts, asyncio,
namespaces, bad messages; and the example paper bot's PnL against the backtest engine."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from rtqis.analytics.backtest import backtest, first_quote_after, positions_from_alerts
from rtqis.client import Subscription, SubscriptionError, parse_since, subscribe
from rtqis.kafka.admin import create_topics
from rtqis.kafka.clients import MessageProducer
from rtqis.schemas import models as m
from rtqis.schemas.frames import BOOK_FRAME, Frame
from rtqis.settings import Settings
from rtqis.topics import ALERTS as _ALERTS
from rtqis.topics import BOOK, PAIR
from tests.conftest import ROOT, env_of, make_settings, wait_until

pytestmark = pytest.mark.integration

T0 = 1_723_161_600_000  # 2024-08-09T00:00:00Z
PAIR_NAME = "ETHUSDT/BTCUSDT"


def _alert(i: int, kind: str = "exit", t: int | None = None) -> m.Alert:
    return m.Alert(
        time=T0 + 1000 * i if t is None else t,
        pair=PAIR_NAME,
        kind=kind,
        zscore=float(i),
        threshold=2.0,
        spread=0.0,
        beta=1.0,
        x=60_000.0,
        y=2_600.0,
        message=f"alert {i}",
    )


def _publish_alerts(settings: Settings, n: int, first: int = 0) -> None:
    p = MessageProducer(settings)
    for i in range(first, first + n):
        p.send(_ALERTS, _alert(i), key=PAIR_NAME, timestamp_ms=T0 + 1000 * i)
    assert p.flush() == 0


def _zs(items: list[Any]) -> list[int]:
    return [int(a.zscore) for a in items]


def _client_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rtqis-client")]


# --- no broker needed ------------------------------------------------------------------------------


def test_an_unknown_topic_or_a_bad_since_is_one_clear_error() -> None:
    with pytest.raises(SubscriptionError, match="unknown topic 'analytics.pairs'.*analytics.pair"):
        subscribe("analytics.pairs")
    with pytest.raises(SubscriptionError, match="namespace="):
        subscribe("replay.x.alerts")
    with pytest.raises(SubscriptionError, match="time zone"):
        subscribe("alerts", since=datetime(2024, 8, 9))  # noqa: DTZ001  (the mistake under test)
    with pytest.raises(SubscriptionError, match="since must be"):
        subscribe("alerts", since="yesterday")  # type: ignore[arg-type]
    with pytest.raises(SubscriptionError, match=">= 0"):
        subscribe("alerts", since=-5)


def test_parse_since_reads_the_command_line_forms() -> None:
    assert parse_since("latest") == "latest"
    assert parse_since("earliest") == "earliest"
    assert parse_since(str(T0)) == T0
    assert parse_since("2024-08-09T00:00:00Z") == datetime(2024, 8, 9, tzinfo=UTC)
    with pytest.raises(SubscriptionError, match="time zone"):
        parse_since("2024-08-09T00:00:00")
    with pytest.raises(SubscriptionError, match="neither"):
        parse_since("soon")


# --- where a subscription starts -------------------------------------------------------------------


def test_earliest_reads_everything_in_order_and_stops_at_the_end(settings: Settings) -> None:
    _publish_alerts(settings, 8)
    with subscribe("alerts", since="earliest", settings=settings, stop_at_end=True) as sub:
        got = list(sub)
        assert sub.last is not None and sub.last.key == PAIR_NAME and sub.last.timestamp_ms == T0 + 7000
    assert all(isinstance(a, m.Alert) for a in got)
    assert _zs(got) == list(range(8))
    assert sub.closed and sub.stats.yielded == 8 and sub.stats.skipped == 0
    with subscribe("alerts", since="earliest", settings=settings) as sub:  # no end lookup: the consumer's own
        assert _zs([next(sub) for _ in range(8)]) == list(range(8))


@pytest.mark.parametrize("form", ["epoch_ms", "datetime"])
def test_since_a_time_starts_at_the_first_record_at_or_after_it(settings: Settings, form: str) -> None:
    # one producer flush: the records share batches, where the embedded broker's own time lookup
    # answers offset 0 for every time (the client must not trust it)
    _publish_alerts(settings, 20)
    t = T0 + 12_500  # between the records 12 and 13
    since: Any = t if form == "epoch_ms" else datetime.fromtimestamp(t / 1000, tz=UTC)
    with subscribe("alerts", since=since, settings=settings, stop_at_end=True) as sub:
        assert _zs(list(sub)) == list(range(13, 20))
    exact = T0 + 5000  # a record's own timestamp is included
    with subscribe("alerts", since=exact, settings=settings, stop_at_end=True) as sub:
        assert _zs(list(sub)) == list(range(5, 20))
    with subscribe("alerts", since=T0 + 60_000, settings=settings, stop_at_end=True) as sub:
        assert list(sub) == []  # after the last record: nothing old, only what comes


def test_latest_skips_what_was_there_and_reads_what_comes(settings: Settings) -> None:
    _publish_alerts(settings, 5)
    with subscribe("alerts", settings=settings) as sub:  # since="latest" is the default
        _publish_alerts(settings, 3, first=100)
        got = []
        for a in sub:
            got.append(a)
            if len(got) == 3:
                break
    assert _zs(got) == [100, 101, 102]


# --- at-least-once with a group ------------------------------------------------------------------


def test_a_group_resumes_after_the_last_handled_message_and_redelivers_the_unhandled_one(
    settings: Settings,
) -> None:
    _publish_alerts(settings, 8)
    group = f"bot-{uuid.uuid4().hex[:8]}"
    got: list[m.Alert] = []
    with subscribe("alerts", since="earliest", group=group, settings=settings) as sub:
        for a in sub:
            assert isinstance(a, m.Alert)
            got.append(a)
            if len(got) == 3:
                break  # the bot "dies" while handling message 2: 0 and 1 were handled
    assert _zs(got) == [0, 1, 2]

    # a restart with the same group: the unhandled message 2 comes again, nothing is lost;
    # `since` does not apply to a partition the group has committed
    with subscribe("alerts", since="latest", group=group, settings=settings) as sub:
        first = next(sub)
        assert int(first.zscore) == 2  # type: ignore[union-attr]
        sub.commit()  # handled now, explicitly
    with subscribe("alerts", since="latest", group=group, settings=settings, stop_at_end=True) as sub:
        assert _zs(list(sub)) == [3, 4, 5, 6, 7]
    # read to the end: everything was handled, a restart sees only new messages
    _publish_alerts(settings, 1, first=8)
    with subscribe("alerts", since="earliest", group=group, settings=settings, stop_at_end=True) as sub:
        assert _zs(list(sub)) == [8]
    # another group is independent: it starts where `since` says
    with subscribe("alerts", since=T0 + 7000, group=group + "-b", settings=settings, stop_at_end=True) as sub:
        assert _zs(list(sub)) == [7, 8]


# --- asyncio ---------------------------------------------------------------------------------------


def test_async_for_yields_the_same_models_and_leaves_no_thread(settings: Settings) -> None:
    _publish_alerts(settings, 6)

    async def main() -> list[Any]:
        out = []
        async with subscribe("alerts", since="earliest", settings=settings, stop_at_end=True) as sub:
            async for a in sub:
                out.append(a)
                assert _client_threads()  # polled in its own worker thread ...
                await asyncio.sleep(0)
        return out

    got = asyncio.run(main())
    assert _zs(got) == list(range(6))
    assert _client_threads() == []  # ... stopped by close()


def test_a_cancelled_await_loses_no_message(settings: Settings) -> None:
    async def main() -> list[Any]:
        out: list[Any] = []
        async with subscribe("alerts", settings=settings) as sub:
            # time out a few waits on an empty topic, then publish: every message still arrives once
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(sub.__anext__(), 0.05)
            await asyncio.to_thread(_publish_alerts, settings, 4)
            while len(out) < 4:
                try:
                    out.append(await asyncio.wait_for(sub.__anext__(), 0.05))
                except TimeoutError:
                    continue
        return out

    assert _zs(asyncio.run(main())) == [0, 1, 2, 3]
    assert _client_threads() == []


# --- namespaces ------------------------------------------------------------------------------------


def test_a_replay_namespace_never_sees_the_live_messages(settings: Settings, tmp_path: Path) -> None:
    replay = make_settings(settings.bootstrap_servers, tmp_path)
    create_topics(replay)
    _publish_alerts(settings, 3)  # "live" here is the test's own namespace
    _publish_alerts(replay, 2, first=50)
    with subscribe("alerts", since="earliest", namespace=replay.namespace, settings=settings, stop_at_end=True) as r:
        assert r.topics == [f"replay.{replay.namespace}.alerts"]
        assert _zs(list(r)) == [50, 51]
    with subscribe("alerts", since="earliest", settings=settings, stop_at_end=True) as live:
        assert live.topics == [f"replay.{settings.namespace}.alerts"]
        assert _zs(list(live)) == [0, 1, 2]


# --- bad messages ----------------------------------------------------------------------------------


def test_an_undecodable_message_is_skipped_logged_and_counted(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    _publish_alerts(settings, 2)
    raw = Producer(settings.kafka_client_config())
    raw.produce(_ALERTS.full_name(settings.namespace), value=b"{not json", key=PAIR_NAME.encode())
    raw.produce(_ALERTS.full_name(settings.namespace), value=b'{"time": 1}')  # valid JSON, not an Alert
    assert raw.flush(10) == 0
    del raw  # no client left reconnecting after the session's broker stops
    _publish_alerts(settings, 2, first=2)
    with (
        caplog.at_level("WARNING", logger="rtqis.client"),
        subscribe("alerts", since="earliest", settings=settings, stop_at_end=True) as sub,
    ):
        got = list(sub)
    assert _zs(got) == [0, 1, 2, 3]
    assert sub.stats.skipped == 2 and sub.stats.yielded == 4 and sub.stats.received == 6
    assert "Invalid JSON" in caplog.text and "pair: Field required" in sub.stats.last_skip_reason
    assert sum("skipped an undecodable message" in r.getMessage() for r in caplog.records) == 2


def test_a_subscription_to_a_topic_that_does_not_exist_fails_clearly(settings: Settings, tmp_path: Path) -> None:
    bare = make_settings(settings.bootstrap_servers, tmp_path)  # its topics were never created
    with pytest.raises(Exception, match="unknown topic"):
        subscribe("alerts", settings=bare)


# --- the paper bot ---------------------------------------------------------------------------------


def _load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _series(n: int = 400, seed: int = 7) -> dict[str, Any]:
    """A recorded-like series: 1 s PairSignals, alerts every so often, book quotes of both legs
    at irregular times (several per signal, none exactly on a signal time)."""
    rng = np.random.default_rng(seed)
    t = T0 + 1000 * np.arange(n, dtype=np.int64)
    x = 60_000 * np.exp(np.cumsum(rng.normal(0, 2e-4, n)))
    y = 2_600 * np.exp(np.cumsum(rng.normal(0, 2e-4, n)))
    hedge = 0.04 + np.cumsum(rng.normal(0, 1e-4, n))
    alert_rows = np.sort(rng.choice(np.arange(5, n - 5), 24, replace=False))
    kinds = [["enter_long_spread", "exit", "enter_short_spread", "exit"][i % 4] for i in range(len(alert_rows))]
    kinds[7] = "enter_long_spread"  # a reversal straight from one side to the other
    quotes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for sym, mid in (("BTCUSDT", x), ("ETHUSDT", y)):
        qt = np.sort(rng.choice(np.arange(T0 - 500, T0 + 1000 * n + 500), 3 * n, replace=False)).astype(np.int64)
        qt = qt[qt % 1000 != 0]
        j = np.clip((qt - T0) // 1000, 0, n - 1)
        half = mid[j] * rng.uniform(0.5e-4, 3e-4, len(qt))
        quotes[sym] = (qt, mid[j] - half, mid[j] + half)
    return {"t": t, "x": x, "y": y, "hedge": hedge, "alert_rows": alert_rows, "kinds": kinds, "quotes": quotes}


def _publish_series(settings: Settings, s: dict[str, Any]) -> None:
    p = MessageProducer(settings)
    for i, ti in enumerate(s["t"].tolist()):
        sig = m.PairSignal(
            time=ti,
            pair=PAIR_NAME,
            x=float(s["x"][i]),
            y=float(s["y"][i]),
            n_obs=i,
            hedge=float(s["hedge"][i]),
            zscore=None,
            innovation_z=None,
        )
        p.send(PAIR, sig, key=PAIR_NAME, timestamp_ms=ti)
    for r, k in zip(s["alert_rows"].tolist(), s["kinds"], strict=True):
        ti = int(s["t"][r])
        p.send(_ALERTS, _alert(r, k, t=ti), key=PAIR_NAME, timestamp_ms=ti)
    for sym, (qt, bid, ask) in s["quotes"].items():
        for lo in range(0, len(qt), 97):  # frames of up to 97 quotes, as a feed would cut them
            sl = slice(lo, lo + 97)
            k = len(qt[sl])
            cols = {
                "update_id": np.arange(lo, lo + k, dtype=np.int64),
                "bid_price": bid[sl],
                "bid_qty": np.ones(k),
                "ask_price": ask[sl],
                "ask_qty": np.ones(k),
                "event_time": None,
                "recv_time": qt[sl],
            }
            p.send(BOOK, Frame.build(BOOK_FRAME, sym, cols), key=sym, timestamp_ms=int(qt[sl][0]))
    assert p.flush() == 0


def _engine(s: dict[str, Any], fee_bps: float) -> Any:
    """The backtest engine on the same series, called directly: the reference."""
    t = s["t"]
    pos = positions_from_alerts(len(t), s["alert_rows"], s["kinds"])
    qx, qy = s["quotes"]["BTCUSDT"], s["quotes"]["ETHUSDT"]
    xb, xa = first_quote_after(t, qx[0], qx[1], qx[2])
    yb, ya = first_quote_after(t, qy[0], qy[1], qy[2])
    return backtest(t, pos, s["hedge"], xb, xa, yb, ya, fee_bps=fee_bps)


def test_the_paper_bot_pnl_equals_the_backtest_engine_on_the_same_series(settings: Settings) -> None:
    bot = _load_example("paper_bot")
    s = _series()
    _publish_series(settings, s)
    fee = 7.5
    lines: list[str] = []
    book = bot.run(settings, since="earliest", fee_bps=fee, stop_at_end=True, out=lines.append)
    res = book.result()
    ref = _engine(s, fee)
    assert ref.round_trips >= 10  # the series trades: the comparison means something
    assert res.round_trips == ref.round_trips
    for k in ("gross_pnl", "net_pnl", "spread_cost", "fees", "turnover"):
        assert getattr(res, k) == pytest.approx(getattr(ref, k), abs=1e-9, rel=0), k
    np.testing.assert_allclose(res.equity_net, ref.equity_net, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(res.trades["entry_time"], ref.trades["entry_time"])
    # every closed trade was printed once, and the last line is the final PnL
    assert sum(line.startswith("trade ") for line in lines) == ref.round_trips
    assert f"{ref.net_pnl:.4f}" in lines[-1]
    # a fee change changes the net only: the cost model is the engine's, not a copy of it
    free = bot.run(settings, since="earliest", fee_bps=0.0, stop_at_end=True, out=lambda _: None).result()
    assert free.gross_pnl == pytest.approx(ref.gross_pnl, abs=1e-9) and free.fees == 0.0


def test_the_paper_bot_runs_as_a_script_and_stops_cleanly_on_ctrl_c(settings: Settings, tmp_path: Path) -> None:
    script = ROOT / "examples" / "paper_bot.py"
    help_out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert help_out.returncode == 0 and "--fee-bps" in help_out.stdout and "--namespace" in help_out.stdout
    log = tmp_path / "bot.log"
    with log.open("wb") as out:
        p = subprocess.Popen(
            [sys.executable, str(script), "--namespace", settings.namespace, "--since", "earliest"],
            env=env_of(settings) | {"PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: "following" in log.read_text(), timeout_s=60, what="the bot to start")
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        assert p.wait(20) == 0, log.read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    assert "stopped" in log.read_text()


def test_subscription_type_is_both_iterators() -> None:
    assert hasattr(Subscription, "__iter__") and hasattr(Subscription, "__aiter__")


# --- any Kafka client: the plain confluent-kafka + fastavro example ---------------------------------


def test_plain_confluent_kafka_reads_both_codecs_with_the_published_avsc(settings: Settings) -> None:
    plain = _load_example("plain_kafka")
    imports = [
        ln
        for ln in (ROOT / "examples" / "plain_kafka.py").read_text().splitlines()
        if ln.startswith(("import", "from"))
    ]
    assert imports and not any("rtqis" in ln for ln in imports)
    _publish_alerts(settings, 2)  # JSON, the default codec
    _publish_alerts(settings.model_copy(update={"codec": "avro"}), 2, first=2)
    frame = Frame.build(
        BOOK_FRAME,
        "BTCUSDT",
        {
            "update_id": np.arange(3, dtype=np.int64),
            "bid_price": np.array([1.0, 2.0, 3.0]),
            "bid_qty": np.ones(3),
            "ask_price": np.array([1.5, 2.5, 3.5]),
            "ask_qty": np.ones(3),
            "event_time": None,
            "recv_time": np.array([T0, T0 + 1, T0 + 2], dtype=np.int64),
        },
    )
    avro = MessageProducer(settings.model_copy(update={"codec": "avro"}))
    avro.send(BOOK, frame, key="BTCUSDT")
    assert avro.flush() == 0

    got = list(
        plain.read(
            settings.bootstrap, "alerts", namespace=settings.namespace, from_beginning=True, limit=4, idle_timeout_s=20
        )
    )
    assert [name for name, _ in got] == ["rtqis.Alert"] * 4
    assert [m.Alert(**rec) for _, rec in got] == [_alert(i) for i in range(4)]
    ((name, rec),) = plain.read(
        settings.bootstrap, "ticks.book", namespace=settings.namespace, from_beginning=True, limit=1, idle_timeout_s=20
    )
    assert name == "rtqis.BookTickerFrame" and rec["symbol"] == "BTCUSDT"
    assert rec["ask_price"] == [1.5, 2.5, 3.5] and rec["event_time"] is None
