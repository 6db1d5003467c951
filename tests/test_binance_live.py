"""`rtqis produce binance` end to end: a local WebSocket server replaying real recorded Binance messages
and a local REST server for the depth snapshot -> the real producer process -> the broker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rtqis.producers.binance_format import BadMessage, BookEvent, TradeEvent, parse_ws_message
from rtqis.settings import Settings
from rtqis.topics import BOOK, DEADLETTER, DEPTH, TRADES
from tests.binance_replay_server import ReplayServer, load_recorded
from tests.conftest import BINANCE_DATA, collect, env_of, make_settings
from tests.test_binance_rest import FakeBinance

pytestmark = [pytest.mark.broker, pytest.mark.integration]

CAPTURE = BINANCE_DATA / "streams_raw" / "spot_btcusdt_20240808.gz"
GARBAGE = [
    b"\x00\xff not json",
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255000,"s":"BTCUSDT","t":1,"p":"-1.0",'
    '"q":"0.1","T":1723161255000,"m":true,"M":true}}',
]


def test_live_feed_publishes_trades_books_depth_and_dead_letters(bootstrap: str, tmp_path: Path) -> None:
    from rtqis.kafka.admin import create_topics

    lines = load_recorded([CAPTURE], limit=3000)
    frames: list[str | bytes] = [ln.text for ln in lines]
    frames[100:100] = GARBAGE  # two bad frames early in the stream
    expected_trades, expected_books = [], []
    for ln in lines:
        try:
            ev = parse_ws_message(ln.text, 0, {"BTCUSDT"})
        except BadMessage:
            continue
        if isinstance(ev, TradeEvent):
            expected_trades.append(ev.trade.trade_id)
        elif isinstance(ev, BookEvent):
            expected_books.append(ev.book.update_id)

    with FakeBinance() as rest:
        settings: Settings = make_settings(
            bootstrap,
            tmp_path,
            symbols=["BTCUSDT"],
            pairs=[],
            binance_rest_url=rest.base_url,
            binance_ws_url="ws://127.0.0.1:1",  # replaced below once the server has a port
        )

        async def main() -> None:
            async with ReplayServer(frames, interval_s=0.001) as ws:  # ~3 s of live-like flow
                s = settings.model_copy(update={"binance_ws_url": ws.url})
                create_topics(s)
                log = (tmp_path / "producer.log").open("wb")
                p = subprocess.Popen(
                    [sys.executable, "-m", "rtqis", "produce", "binance"],
                    env=env_of(s),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                try:
                    await asyncio.wait_for(ws.exhausted.wait(), 60)
                    trades = await asyncio.to_thread(
                        collect, s, TRADES.name, lambda rows: len(rows) >= len(expected_trades)
                    )
                    books = await asyncio.to_thread(
                        collect, s, BOOK.name, lambda rows: len(rows) >= len(expected_books)
                    )
                    depth = await asyncio.to_thread(collect, s, DEPTH.name, lambda rows: len(rows) >= 2)
                    dls = await asyncio.to_thread(collect, s, DEADLETTER.name, lambda rows: len(rows) >= 2)
                finally:
                    p.send_signal(signal.SIGTERM)
                    code = await asyncio.to_thread(p.wait, 30)
                    log.close()
                out = (tmp_path / "producer.log").read_text()
                assert code == 0, out
                assert [t["trade_id"] for t in trades] == expected_trades
                assert [b["update_id"] for b in books] == expected_books
                assert all(b["event_time"] is None for b in books)  # spot bookTicker has no event time
                for d in depth:
                    assert len(d["bid_price"]) == 20 and d["bid_price"] == sorted(d["bid_price"], reverse=True)
                    assert d["ask_price"] == sorted(d["ask_price"]) and d["bid_price"][0] < d["ask_price"][0]
                assert [d["payload"] for d in dls] == [GARBAGE[0], GARBAGE[1].encode()]
                assert "price" in dls[1]["reason"]
                assert "bad frames sent to deadletter" in out

        asyncio.run(main())
    assert any(x.path == "/api/v3/depth" for x in rest.seen)
