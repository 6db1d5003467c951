"""BinanceRest / AsyncBinanceRest against a real local HTTP server that behaves like Binance.

The server (``http.server.ThreadingHTTPServer`` on 127.0.0.1) serves ``/api/v3/klines`` from Binance's own
ETHUSDT klines (``tests/data/binance/klines``) followed by synthetic minutes (to have > 1000 rows for
pagination), and ``/api/v3/depth`` / ``/fapi/v1/depth`` from the REST snapshots recorded in
``tests/data/binance/streams_raw``. A test can script the next responses (status, headers, body, delay)
and every request the server saw is recorded. ``sleep`` is injected: no test really waits.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson
import pytest

from rtqis.errors import RtqisError
from rtqis.producers.binance_rest import (
    MAX_KLINES_PER_REQUEST,
    AsyncBinanceRest,
    BinanceRest,
    KlineTable,
    RestError,
    _default_prefix,
)
from tests.conftest import BINANCE_DATA

BINANCE = BINANCE_DATA
KLINES_CSV = next((BINANCE / "klines").glob("ETHUSDT-UM-1m-*.csv"))
MINUTE = 60_000


def _real_klines() -> list[list[Any]]:
    """The archive CSV rows as Binance's REST JSON arrays (times and count int, the rest strings)."""
    with KLINES_CSV.open(newline="") as f:
        rows = list(csv.reader(f))
    out = []
    for r in rows[1:]:
        out.append([int(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6]), r[7], int(r[8]), r[9], r[10], r[11]])
    return out


def _synthetic_klines(after: list[Any], n: int) -> list[list[Any]]:
    out = []
    t0 = after[0] + MINUTE
    for i in range(n):
        o = 2680.0 + 0.01 * (i % 500)
        t = t0 + i * MINUTE
        out.append(
            [
                t,
                f"{o:.2f}",
                f"{o + 1.25:.2f}",
                f"{o - 0.75:.2f}",
                f"{o + 0.5:.2f}",
                f"{100 + i % 37:.3f}",
                t + MINUTE - 1,
                f"{(100 + i % 37) * o:.5f}",
                1000 + i,
                f"{50 + i % 11:.3f}",
                f"{(50 + i % 11) * o:.5f}",
                "0",
            ]
        )
    return out


def _recorded_snapshot(capture: str) -> dict[str, Any]:
    with gzip.open(BINANCE / "streams_raw" / capture, "rb") as f:
        for line in f:
            _, js = line.split(b" ", 1)
            if not js.startswith(b'{"stream"'):
                return orjson.loads(js)
    raise AssertionError(f"no REST snapshot in {capture}")


REAL = _real_klines()
KLINES = REAL + _synthetic_klines(REAL[-1], 2500 - len(REAL))
SPOT_SNAPSHOT = _recorded_snapshot("spot_btcusdt_20240808.gz")
UM_SNAPSHOT = _recorded_snapshot("usdm_ethusdt_20240808.gz")


@dataclass
class Seen:
    path: str
    params: dict[str, str]
    at: float


@dataclass
class Step:
    """A scripted answer: ``status`` None = the normal answer (with ``headers`` added) after ``delay`` s."""

    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class FakeBinance:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.plan: deque[Step] = deque()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                params = {k: v[-1] for k, v in parse_qs(url.query).items()}
                with fake.lock:
                    fake.seen.append(Seen(url.path, params, time.monotonic()))
                    step = fake.plan.popleft() if fake.plan else Step()
                if step.delay:
                    time.sleep(step.delay)
                if step.status is None:
                    status, body = fake.answer(url.path, params)
                else:
                    status, body = step.status, step.body
                data = body if isinstance(body, bytes) else orjson.dumps(body)
                try:
                    self.send_response_only(status)
                    headers = {"Server": "fake-binance", "Date": self.date_time_string(), **step.headers}
                    headers.setdefault("Content-Type", "application/json;charset=UTF-8")
                    headers["Content-Length"] = str(len(data))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def answer(self, path: str, p: dict[str, str]) -> tuple[int, Any]:
        if p.get("symbol") not in ("ETHUSDT", "BTCUSDT"):
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if path == "/api/v3/klines":
            limit = int(p.get("limit", 500))
            if limit > 1000:
                return 400, {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}
            start, end = p.get("startTime"), p.get("endTime")
            rows = [r for r in KLINES if (start is None or r[0] >= int(start)) and (end is None or r[0] <= int(end))]
            return 200, (rows[:limit] if start is not None else rows[-limit:])
        if path == "/api/v3/depth":
            lim = int(p.get("limit", 100))
            snap = SPOT_SNAPSHOT
            return 200, {"lastUpdateId": snap["lastUpdateId"], "bids": snap["bids"][:lim], "asks": snap["asks"][:lim]}
        if path == "/fapi/v1/depth":
            return 200, UM_SNAPSHOT
        return 404, b"<html>Not Found</html>"

    def __enter__(self) -> FakeBinance:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Sleeps(list[float]):
    """An injected ``sleep`` that records instead of waiting."""

    def __call__(self, s: float) -> None:
        self.append(s)


class AsyncSleeps(list[float]):
    async def __call__(self, s: float) -> None:
        self.append(s)


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance() as f:
        yield f


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def client(fake: FakeBinance, sleeps: Sleeps, **kw: Any) -> BinanceRest:
    kw.setdefault("rng", random.Random(1))
    return BinanceRest(fake.base_url, sleep=sleeps, **kw)


def expected_columns(rows: list[list[Any]]) -> dict[str, np.ndarray]:
    return KlineTable.from_rows("X", "1m", rows).columns()


# ------------------------------------------------------------------------------------------ klines


def test_klines_paginates_2500_rows_in_3_requests_with_exact_values(fake: FakeBinance, sleeps: Sleeps) -> None:
    start, end = KLINES[0][0], KLINES[-1][0]
    with client(fake, sleeps) as rest:
        t = rest.klines("ethusdt", "1m", start_ms=start, end_ms=end)
    assert len(t) == 2500
    assert [s.path for s in fake.seen] == ["/api/v3/klines"] * 3
    assert [s.params["startTime"] for s in fake.seen] == [
        str(start),
        str(start + 999 * MINUTE + 1),
        str(start + 1999 * MINUTE + 1),
    ]
    assert all(s.params["limit"] == "1000" and s.params["endTime"] == str(end) for s in fake.seen)
    assert all(s.params["symbol"] == "ETHUSDT" and s.params["interval"] == "1m" for s in fake.seen)
    assert sleeps == []
    # Binance's own klines, value for value (float64 of the decimal strings, int64 times and counts)
    with KLINES_CSV.open(newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 14
    for i, r in enumerate(csv_rows):
        assert t.open_time[i] == int(r["open_time"]) and t.close_time[i] == int(r["close_time"])
        assert (t.open[i], t.high[i], t.low[i], t.close[i]) == tuple(
            float(r[k]) for k in ("open", "high", "low", "close")
        )
        assert t.volume[i] == float(r["volume"]) and t.quote_volume[i] == float(r["quote_volume"])
        assert t.trades[i] == int(r["count"])
        assert t.taker_buy_volume[i] == float(r["taker_buy_volume"])
        assert t.taker_buy_quote_volume[i] == float(r["taker_buy_quote_volume"])
    assert t.open[0] == 2678.15 and t.trades[0] == 2806
    for name, col in expected_columns(KLINES).items():
        np.testing.assert_array_equal(getattr(t, name), col, err_msg=name)
    assert t.open_time.dtype == np.int64 and t.trades.dtype == np.int64 and t.close.dtype == np.float64
    assert np.all(np.diff(t.open_time) == MINUTE)


def test_klines_without_end_stops_on_a_short_page(fake: FakeBinance, sleeps: Sleeps) -> None:
    with client(fake, sleeps) as rest:
        t = rest.klines("ETHUSDT", start_ms=KLINES[1200][0])
    assert len(t) == 1300 and t.open_time[0] == KLINES[1200][0] and t.open_time[-1] == KLINES[-1][0]
    assert len(fake.seen) == 2 and "endTime" not in fake.seen[0].params


def test_klines_limit_and_end_cut_the_pages(fake: FakeBinance, sleeps: Sleeps) -> None:
    with client(fake, sleeps) as rest:
        t = rest.klines("ETHUSDT", start_ms=KLINES[0][0], limit=1500)
        assert len(t) == 1500 and [s.params["limit"] for s in fake.seen] == ["1000", "500"]
        fake.seen.clear()
        t = rest.klines("ETHUSDT", start_ms=KLINES[0][0] + 1, end_ms=KLINES[9][0])  # start rounds up
        assert list(t.open_time) == [r[0] for r in KLINES[1:10]] and len(fake.seen) == 1


def test_klines_latest_pages_backwards(fake: FakeBinance, sleeps: Sleeps) -> None:
    end = KLINES[-1][0]
    with client(fake, sleeps) as rest:
        t = rest.klines("ETHUSDT", end_ms=end, limit=1500)
    assert list(t.open_time) == [r[0] for r in KLINES[-1500:]]
    assert [(s.params.get("startTime"), s.params["endTime"], s.params["limit"]) for s in fake.seen] == [
        (None, str(end), "1000"),
        (None, str(KLINES[-1000][0] - 1), "500"),
    ]


# --------------------------------------------------------------------------------------------- depth


def test_depth_snapshot_from_the_recorded_snapshot(fake: FakeBinance, sleeps: Sleeps) -> None:
    with client(fake, sleeps) as rest:
        snap = rest.depth_snapshot("btcusdt", limit=1000)
    assert fake.seen[0].path == "/api/v3/depth" and fake.seen[0].params == {"symbol": "BTCUSDT", "limit": "1000"}
    assert snap.symbol == "BTCUSDT" and snap.last_update_id == 50093239218
    assert snap.bids.shape == (1000, 2) and snap.asks.shape == (1000, 2)
    assert tuple(snap.bids[0]) == (61837.63, 3.78826) and tuple(snap.asks[0]) == (61837.64, 1.54698)
    expected_bids = np.array([[float(p), float(q)] for p, q in SPOT_SNAPSHOT["bids"]])
    np.testing.assert_array_equal(snap.bids, expected_bids)
    assert snap.event_time is None and abs(snap.recv_time - time.time() * 1000) < 60_000
    m = snap.to_model(5)
    assert m.bid_price[0] == 61837.63 and len(m.ask_qty) == 5 and m.last_update_id == snap.last_update_id


def test_futures_prefix_and_snapshot_times(fake: FakeBinance, sleeps: Sleeps) -> None:
    assert _default_prefix("https://api.binance.com") == "/api/v3"
    assert _default_prefix("https://fapi.binance.com/") == "/fapi/v1"
    assert _default_prefix("https://dapi.binance.com") == "/dapi/v1"
    with client(fake, sleeps, api_prefix="/fapi/v1") as rest:
        snap = rest.depth_snapshot("ETHUSDT")
    assert fake.seen[0].path == "/fapi/v1/depth"
    assert snap.last_update_id == 5123107856276 and snap.event_time == 1723161256567
    assert snap.transaction_time == 1723161256561 and tuple(snap.bids[0]) == (2681.62, 16.969)


# ------------------------------------------------------------------------------------- rate limits


def test_429_honours_retry_after_then_succeeds(fake: FakeBinance, sleeps: Sleeps) -> None:
    fake.plan.append(Step(429, {"code": -1003, "msg": "Too many requests."}, {"Retry-After": "7"}))
    with client(fake, sleeps) as rest:
        snap = rest.depth_snapshot("BTCUSDT", limit=5)
    assert sleeps == [7.0]
    assert len(fake.seen) == 2 and fake.seen[0].params == fake.seen[1].params
    assert snap.bids.shape == (5, 2)


def test_418_honours_retry_after_and_refuses_absurd_waits(fake: FakeBinance, sleeps: Sleeps) -> None:
    fake.plan.append(Step(418, {"code": -1003, "msg": "Way too many requests; IP banned."}, {"Retry-After": "120"}))
    with client(fake, sleeps) as rest:
        t = rest.klines("ETHUSDT", start_ms=KLINES[0][0], limit=3)
    assert sleeps == [120.0] and len(t) == 3 and len(fake.seen) == 2
    fake.plan.append(Step(418, {"code": -1003, "msg": "IP banned until 1723170000000."}, {"Retry-After": "7200"}))
    with client(fake, sleeps, max_wait_s=600) as rest, pytest.raises(RestError, match="Retry-After 7200 s") as ei:
        rest.depth_snapshot("BTCUSDT")
    assert ei.value.status == 418 and "IP banned until" in str(ei.value) and len(sleeps) == 1


def test_5xx_retried_with_jittered_backoff(fake: FakeBinance, sleeps: Sleeps) -> None:
    fake.plan.extend([Step(502, b"<html>502 Bad Gateway</html>"), Step(503, {"code": -1001, "msg": "Internal"})])
    with client(fake, sleeps, backoff_s=0.5) as rest:
        snap = rest.depth_snapshot("BTCUSDT", limit=10)
    assert snap.last_update_id == 50093239218 and len(fake.seen) == 3
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_5xx_gives_up_after_max_retries_with_one_clear_line(fake: FakeBinance, sleeps: Sleeps) -> None:
    fake.plan.extend([Step(502, b"<html>\n<h1>502 Bad   Gateway</h1></html>")] * 3)
    with client(fake, sleeps, max_retries=2) as rest, pytest.raises(RestError) as ei:
        rest.klines("ETHUSDT", start_ms=KLINES[0][0])
    msg = str(ei.value)
    assert "\n" not in msg and isinstance(ei.value, RtqisError)
    assert "/api/v3/klines?symbol=ETHUSDT" in msg and "HTTP 502" in msg and "<h1>502 Bad Gateway</h1>" in msg
    assert "after 3 attempts" in msg and ei.value.status == 502
    assert len(fake.seen) == 3 and len(sleeps) == 2


def test_timeout_then_success(fake: FakeBinance, sleeps: Sleeps) -> None:
    fake.plan.append(Step(delay=1.0))  # the first answer comes too late for timeout_s=0.25
    with client(fake, sleeps, timeout_s=0.25) as rest:
        t0 = time.monotonic()
        snap = rest.depth_snapshot("BTCUSDT", limit=20)
        took = time.monotonic() - t0
    assert snap.bids.shape == (20, 2) and len(fake.seen) == 2 and len(sleeps) == 1
    assert 0.2 <= took < 0.9


def test_connection_refused_gives_up(sleeps: Sleeps) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with BinanceRest(f"http://127.0.0.1:{port}", max_retries=3, sleep=sleeps) as rest, pytest.raises(RestError) as ei:
        rest.depth_snapshot("BTCUSDT")
    assert "connection error" in str(ei.value) and "after 4 attempts" in str(ei.value) and len(sleeps) == 3


def test_400_raises_at_once_with_binance_message(fake: FakeBinance, sleeps: Sleeps) -> None:
    with client(fake, sleeps) as rest, pytest.raises(RestError) as ei:
        rest.klines("NOPEUSDT", start_ms=KLINES[0][0])
    assert str(ei.value) == "GET /api/v3/klines?symbol=NOPEUSDT: HTTP 400 (Binance code -1121): Invalid symbol."
    assert ei.value.code == -1121 and ei.value.status == 400
    assert len(fake.seen) == 1 and sleeps == []


def test_weight_near_the_limit_pauses_until_the_next_minute(
    fake: FakeBinance, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    fake.plan.append(Step(headers={"X-MBX-USED-WEIGHT-1M": "100"}))  # 2 % used: no pause
    fake.plan.append(Step(headers={"X-MBX-USED-WEIGHT-1M": "4900", "Date": "Thu, 08 Aug 2024 23:59:45 GMT"}))
    with client(fake, sleeps, weight_limit_1m=6000) as rest, caplog.at_level(logging.WARNING):
        rest.depth_snapshot("BTCUSDT", limit=5)
        assert sleeps == [] and rest.used_weight == 100
        rest.depth_snapshot("BTCUSDT", limit=5)  # 4900 > 80 % of 6000: the pause is due before the next request
        assert sleeps == [] and rest.used_weight == 4900
        rest.depth_snapshot("BTCUSDT", limit=5)
        assert len(sleeps) == 1 and 15.0 < sleeps[0] <= 16.0  # 15 s to 00:00:00 server time, +1 s margin
        rest.depth_snapshot("BTCUSDT", limit=5)
    assert len(sleeps) == 1 and len(fake.seen) == 4
    assert any("4900/6000" in r.getMessage() and "pausing" in r.getMessage() for r in caplog.records)


# -------------------------------------------------------------------------------------------- async


def test_async_client_paginates_retries_and_snapshots(fake: FakeBinance) -> None:
    sleeps = AsyncSleeps()

    async def main() -> None:
        async with AsyncBinanceRest(fake.base_url, sleep=sleeps, rng=random.Random(2)) as rest:
            t = await rest.klines("ETHUSDT", start_ms=KLINES[0][0], end_ms=KLINES[-1][0])
            assert len(t) == 2500 and len(fake.seen) == 3
            np.testing.assert_array_equal(t.close, expected_columns(KLINES)["close"])
            fake.plan.append(Step(429, {"code": -1003, "msg": "Too many requests."}, {"Retry-After": "3"}))
            fake.plan.append(Step(500, b"oops"))
            snap = await rest.depth_snapshot("BTCUSDT")
            assert snap.last_update_id == 50093239218 and snap.bids.shape == (1000, 2)
            with pytest.raises(RestError, match="Invalid symbol"):
                await rest.depth_snapshot("NOPE")

    asyncio.run(main())
    assert len(sleeps) == 2 and sleeps[0] == 3.0 and 0.25 <= sleeps[1] <= 1.0
    assert len(fake.seen) == 3 + 3 + 1
    assert MAX_KLINES_PER_REQUEST == 1000
