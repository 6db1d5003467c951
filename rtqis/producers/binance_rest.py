"""Binance public REST market data (klines and depth snapshots), with Binance's rate-limit rules.

Two clients with the same methods: :class:`BinanceRest` (blocking, ``httpx.Client``) for backfills and
scripts, :class:`AsyncBinanceRest` (``httpx.AsyncClient``) for the WebSocket producer's event loop, where
depth snapshots are fetched to (re)sync local order books.

Endpoints: ``GET <prefix>/klines`` and ``GET <prefix>/depth``, where the prefix is ``/api/v3`` (spot),
``/fapi/v1`` (USD-M, base URL on ``fapi.*``) or ``/dapi/v1`` (COIN-M, ``dapi.*``), guessed from the base URL
unless ``api_prefix`` is given.

Rate limits, as Binance asks clients to behave:

* every response carries ``X-MBX-USED-WEIGHT-1M`` (request weight used in the current minute); above 80 %
  of ``weight_limit_1m`` the client waits until the next minute boundary (server ``Date`` header, else
  the local clock; +1 s margin) before its next request, and logs it;
* HTTP 429 (limit hit) and 418 (IP banned for hitting it after a 429) carry ``Retry-After`` in seconds:
  the client waits that long and retries (a wait longer than ``max_wait_s`` is an error at once: nobody
  wants a process silently asleep for hours);
* 5xx, timeouts and connection errors are retried with jittered exponential backoff
  (``backoff_s * 2**attempt``, capped at 30 s, times a random factor in [0.5, 1]);
* any other 4xx (bad symbol, bad interval, ...) raises :class:`RestError` at once with Binance's
  ``{"code": .., "msg": ..}``.

At most ``max_retries`` retries follow the first attempt; then :class:`RestError` with one line: status,
endpoint and an excerpt of the body. ``sleep`` is injectable so that tests never wait.

Units: times are epoch milliseconds (int64); prices and quantities float64 parsed from Binance's decimal
strings; ``timeout_s``, waits and backoffs in seconds.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson

from rtqis.errors import RtqisError
from rtqis.schemas.models import DepthSnapshot

__all__ = [
    "KLINE_COLUMNS",
    "MAX_KLINES_PER_REQUEST",
    "AsyncBinanceRest",
    "BinanceRest",
    "DepthSnapshotRest",
    "KlineTable",
    "RestError",
]

log = logging.getLogger(__name__)

MAX_KLINES_PER_REQUEST = 1000
WEIGHT_PAUSE_FRACTION = 0.8
BACKOFF_CAP_S = 30.0
_BODY_EXCERPT = 200

KLINE_COLUMNS: tuple[tuple[str, type], ...] = (
    ("open_time", np.int64),
    ("open", np.float64),
    ("high", np.float64),
    ("low", np.float64),
    ("close", np.float64),
    ("volume", np.float64),
    ("close_time", np.int64),
    ("quote_volume", np.float64),
    ("trades", np.int64),
    ("taker_buy_volume", np.float64),
    ("taker_buy_quote_volume", np.float64),
)
"""Columns of :class:`KlineTable`, in the order of Binance's kline arrays (the 12th, "ignore", is dropped)."""


class RestError(RtqisError):
    """A REST request failed for good; the message is one line naming status, endpoint and reason."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.code = code  # Binance's error code (e.g. -1121 invalid symbol), when it sent one


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, eq=False)
class KlineTable:
    """Klines as numpy columns (one row per kline, ascending ``open_time``; times in epoch ms)."""

    symbol: str
    interval: str
    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    close_time: np.ndarray
    quote_volume: np.ndarray
    trades: np.ndarray
    taker_buy_volume: np.ndarray
    taker_buy_quote_volume: np.ndarray

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    def columns(self) -> dict[str, np.ndarray]:
        """Column name -> array, in :data:`KLINE_COLUMNS` order (e.g. for ``polars.DataFrame(...)``)."""
        return {name: getattr(self, name) for name, _ in KLINE_COLUMNS}

    @classmethod
    def from_rows(cls, symbol: str, interval: str, rows: list[list[Any]]) -> KlineTable:
        """Build from Binance's JSON arrays ``[open_time, "open", ..., trades, ..., "ignore"]``."""
        cols: dict[str, np.ndarray] = {}
        for i, (name, dtype) in enumerate(KLINE_COLUMNS):
            if dtype is np.int64:
                cols[name] = np.fromiter((int(r[i]) for r in rows), dtype=np.int64, count=len(rows))
            else:
                cols[name] = np.fromiter((float(r[i]) for r in rows), dtype=np.float64, count=len(rows))
        return cls(symbol, interval, **cols)


@dataclass(frozen=True, eq=False)
class DepthSnapshotRest:
    """A REST depth snapshot: ``bids`` / ``asks`` are ``(n, 2)`` float64 arrays of ``[price, qty]``, best first.

    ``event_time`` / ``transaction_time`` are sent by futures only (epoch ms); ``recv_time`` is the local
    time the response arrived (epoch ms).
    """

    symbol: str
    last_update_id: int
    bids: np.ndarray
    asks: np.ndarray
    recv_time: int
    event_time: int | None = None
    transaction_time: int | None = None

    def to_model(self, n: int | None = None) -> DepthSnapshot:
        """The best ``n`` levels (all by default) as the wire model :class:`DepthSnapshot`."""
        b = self.bids if n is None else self.bids[:n]
        a = self.asks if n is None else self.asks[:n]
        return DepthSnapshot(
            symbol=self.symbol,
            last_update_id=self.last_update_id,
            event_time=self.event_time,
            recv_time=self.recv_time,
            bid_price=b[:, 0].tolist(),
            bid_qty=b[:, 1].tolist(),
            ask_price=a[:, 0].tolist(),
            ask_qty=a[:, 1].tolist(),
        )


def _levels_array(levels: Any, what: str, endpoint: str) -> np.ndarray:
    if not isinstance(levels, list):
        raise RestError(f"{endpoint}: '{what}' is not a list", endpoint=endpoint)
    try:
        arr = np.array([(float(lvl[0]), float(lvl[1])) for lvl in levels], dtype=np.float64)
    except (TypeError, ValueError, IndexError):
        raise RestError(f"{endpoint}: '{what}' has a level that is not [price, qty]", endpoint=endpoint) from None
    return arr.reshape(-1, 2)


def _parse_depth(symbol: str, obj: Any, endpoint: str) -> DepthSnapshotRest:
    if not isinstance(obj, dict) or "lastUpdateId" not in obj:
        raise RestError(f"{endpoint}: unexpected depth response (no lastUpdateId)", endpoint=endpoint)
    return DepthSnapshotRest(
        symbol=symbol,
        last_update_id=int(obj["lastUpdateId"]),
        bids=_levels_array(obj.get("bids"), "bids", endpoint),
        asks=_levels_array(obj.get("asks"), "asks", endpoint),
        recv_time=int(time.time() * 1000),
        event_time=obj.get("E"),
        transaction_time=obj.get("T"),
    )


def _check_kline_rows(obj: Any, endpoint: str) -> list[list[Any]]:
    if not isinstance(obj, list) or any(not isinstance(r, list) or len(r) < len(KLINE_COLUMNS) for r in obj):
        raise RestError(f"{endpoint}: unexpected klines response (not a list of kline arrays)", endpoint=endpoint)
    return obj


# --------------------------------------------------------------------------------------------------
# Policy shared by both clients (no I/O here)


def _default_prefix(base_url: str) -> str:
    host = urlsplit(base_url).hostname or ""
    if host.startswith("fapi."):
        return "/fapi/v1"
    if host.startswith("dapi."):
        return "/dapi/v1"
    return "/api/v3"


def _excerpt(text: str) -> str:
    one = " ".join(text.split())
    return one if len(one) <= _BODY_EXCERPT else one[: _BODY_EXCERPT - 3] + "..."


def _binance_error(resp: httpx.Response) -> tuple[int | None, str]:
    """Binance's ``(code, msg)`` from an error body, or ``(None, body excerpt)``."""
    try:
        obj = orjson.loads(resp.content)
        if isinstance(obj, dict) and "msg" in obj:
            code = obj.get("code")
            return (code if isinstance(code, int) else None), str(obj["msg"])
    except orjson.JSONDecodeError:
        pass
    return None, _excerpt(resp.text)


@dataclass(frozen=True, slots=True)
class _Retry:
    wait_s: float
    reason: str


class _Policy:
    """Retry, backoff and request-weight decisions; the clients only do the I/O and the sleeping."""

    def __init__(
        self,
        base_url: str,
        api_prefix: str | None,
        max_retries: int,
        weight_limit_1m: int,
        backoff_s: float,
        max_wait_s: float,
        rng: random.Random,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if weight_limit_1m <= 0:
            raise ValueError(f"weight_limit_1m must be > 0, got {weight_limit_1m}")
        self.base_url = base_url.rstrip("/")
        self.prefix = (api_prefix if api_prefix is not None else _default_prefix(base_url)).rstrip("/")
        self.max_retries = max_retries
        self.weight_limit_1m = weight_limit_1m
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.rng = rng
        self.used_weight: int | None = None  # last X-MBX-USED-WEIGHT-1M seen
        self.requests = 0
        self.retries = 0
        self.weight_pauses = 0
        self._resume_at: float | None = None  # time.monotonic() before which no request may go out

    def url(self, endpoint: str) -> str:
        return f"{self.base_url}{self.prefix}/{endpoint}"

    def label(self, endpoint: str, params: dict[str, Any]) -> str:
        """``/api/v3/klines?symbol=BTCUSDT``: how errors and logs name a request."""
        sym = params.get("symbol")
        return f"{self.prefix}/{endpoint}" + (f"?symbol={sym}" if sym else "")

    def pause_before_request(self) -> float:
        """Seconds to wait before the next request (weight pause), 0 if none."""
        if self._resume_at is None:
            return 0.0
        left = self._resume_at - time.monotonic()
        self._resume_at = None
        return max(left, 0.0)

    def backoff(self, attempt: int) -> float:
        b = min(BACKOFF_CAP_S, self.backoff_s * (2**attempt))
        return b * self.rng.uniform(0.5, 1.0)

    def note_weight(self, resp: httpx.Response, endpoint: str) -> None:
        raw = resp.headers.get("x-mbx-used-weight-1m")
        if raw is None:
            return
        try:
            used = int(raw)
        except ValueError:
            return
        self.used_weight = used
        if used < WEIGHT_PAUSE_FRACTION * self.weight_limit_1m:
            return
        now = time.time()
        date = resp.headers.get("date")
        if date:
            try:
                now = email.utils.parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                pass
        wait = 60.0 - (now % 60.0) + 1.0  # to the next minute boundary, +1 s for clock skew and rounding
        self._resume_at = time.monotonic() + wait
        self.weight_pauses += 1
        log.warning(
            "Binance request weight %d/%d used this minute (after %s): pausing %.1f s until the next minute",
            used,
            self.weight_limit_1m,
            endpoint,
            wait,
        )

    def on_response(self, resp: httpx.Response, endpoint: str, attempt: int) -> _Retry | None:
        """None if ``resp`` is a success; a :class:`_Retry` to wait and retry; raises :class:`RestError`."""
        self.note_weight(resp, endpoint)
        st = resp.status_code
        if 200 <= st < 300:
            return None
        code, msg = _binance_error(resp)
        what = f"HTTP {st}" + (f" (Binance code {code})" if code is not None else "")
        if st in (429, 418):
            ra = resp.headers.get("retry-after")
            try:
                wait = float(ra) if ra is not None else self.backoff(attempt)
            except ValueError:
                wait = self.backoff(attempt)
            if wait > self.max_wait_s:
                raise RestError(
                    f"GET {endpoint}: {what}, Retry-After {wait:.0f} s exceeds max_wait_s={self.max_wait_s:.0f}: {msg}",
                    endpoint=endpoint,
                    status=st,
                    code=code,
                )
            reason = "rate limited" if st == 429 else "IP banned (418)"
            return self._retry(endpoint, attempt, wait, f"{what} {reason}: {msg}", st, code)
        if st >= 500:
            return self._retry(endpoint, attempt, self.backoff(attempt), f"{what}: {msg}", st, code)
        raise RestError(f"GET {endpoint}: {what}: {msg}", endpoint=endpoint, status=st, code=code)

    def on_transport_error(self, exc: httpx.TransportError, endpoint: str, attempt: int) -> _Retry:
        kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection error"
        detail = str(exc) or type(exc).__name__
        return self._retry(endpoint, attempt, self.backoff(attempt), f"{kind}: {_excerpt(detail)}", None, None)

    def _retry(
        self, endpoint: str, attempt: int, wait: float, reason: str, status: int | None, code: int | None
    ) -> _Retry:
        if attempt >= self.max_retries:
            raise RestError(
                f"GET {endpoint}: {reason} (gave up after {attempt + 1} attempts)",
                endpoint=endpoint,
                status=status,
                code=code,
            )
        self.retries += 1
        log.warning("GET %s: %s; retry %d/%d in %.2f s", endpoint, reason, attempt + 1, self.max_retries, wait)
        return _Retry(wait, reason)


def _kline_params(symbol: str, interval: str, start: int | None, end: int | None, limit: int) -> dict[str, Any]:
    p: dict[str, Any] = {"symbol": symbol, "interval": interval}
    if start is not None:
        p["startTime"] = start
    if end is not None:
        p["endTime"] = end
    p["limit"] = limit
    return p


class _KlinePager:
    """Which kline page to ask for next, and when to stop (shared by both clients).

    With ``start_ms``: pages forward from it (next page starts at the last ``open_time + 1``) until a page
    is short, passes ``end_ms`` or ``limit`` rows are collected. Without ``start_ms``: the latest
    ``limit`` (default 1000) klines up to ``end_ms`` (or now), paging backwards.
    """

    def __init__(self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int | None):
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if start_ms is not None and end_ms is not None and end_ms < start_ms:
            raise ValueError(f"end_ms {end_ms} is before start_ms {start_ms}")
        self.symbol = symbol.upper()
        self.interval = interval
        self.forward = start_ms is not None
        self.start = start_ms
        self.end = end_ms
        self.limit = limit if limit is not None or self.forward else MAX_KLINES_PER_REQUEST
        self.pages: list[list[list[Any]]] = []
        self._asked = 0
        self.n = 0
        self.done = False

    def params(self) -> dict[str, Any]:
        want = MAX_KLINES_PER_REQUEST if self.limit is None else min(MAX_KLINES_PER_REQUEST, self.limit - self.n)
        self._asked = want
        return _kline_params(self.symbol, self.interval, self.start, self.end, want)

    def add(self, rows: list[list[Any]]) -> None:
        short = len(rows) < self._asked
        if self.forward:
            if self.pages and rows:  # never repeat a kline (a server that ignores startTime, say)
                last = int(self.pages[-1][-1][0])
                rows = [r for r in rows if int(r[0]) > last]
            if self.end is not None:
                rows = [r for r in rows if int(r[0]) <= self.end]
            if rows:
                self.pages.append(rows)
                self.n += len(rows)
                self.start = int(rows[-1][0]) + 1
            self.done = (
                short
                or not rows
                or (self.limit is not None and self.n >= self.limit)
                or (self.end is not None and self.start is not None and self.start > self.end)
            )
        else:
            if self.pages and rows:
                first = int(self.pages[0][0][0])
                rows = [r for r in rows if int(r[0]) < first]
            if rows:
                self.pages.insert(0, rows)
                self.n += len(rows)
                self.end = int(rows[0][0]) - 1
            assert self.limit is not None
            self.done = short or not rows or self.n >= self.limit or (self.end is not None and self.end < 0)

    def table(self) -> KlineTable:
        rows = [r for page in self.pages for r in page]
        if self.limit is not None and len(rows) > self.limit:
            rows = rows[: self.limit] if self.forward else rows[-self.limit :]
        return KlineTable.from_rows(self.symbol, self.interval, rows)


def _client_kwargs(timeout_s: float) -> dict[str, Any]:
    return {
        "timeout": httpx.Timeout(timeout_s),
        "headers": {"User-Agent": "rtqis/0.1 (+httpx)", "Accept": "application/json"},
        "follow_redirects": False,
    }


# --------------------------------------------------------------------------------------------------
# Clients


class BinanceRest:
    """Blocking Binance REST client (see the module docstring for the rate-limit and retry rules).

    ``base_url`` e.g. ``https://api.binance.com`` (spot), ``https://fapi.binance.com`` (USD-M); ``transport``
    lets tests plug in an ``httpx`` transport; ``sleep`` is called for every wait (seconds).
    """

    def __init__(
        self,
        base_url: str = "https://api.binance.com",
        *,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        weight_limit_1m: int = 6000,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        api_prefix: str | None = None,
        backoff_s: float = 0.5,
        max_wait_s: float = 600.0,
        rng: random.Random | None = None,
    ) -> None:
        self._policy = _Policy(
            base_url, api_prefix, max_retries, weight_limit_1m, backoff_s, max_wait_s, rng or random.Random()
        )
        self._sleep = sleep
        self._client = httpx.Client(transport=transport, **_client_kwargs(timeout_s))

    @property
    def used_weight(self) -> int | None:
        """The last ``X-MBX-USED-WEIGHT-1M`` seen."""
        return self._policy.used_weight

    def _get(self, endpoint: str, params: dict[str, Any]) -> Any:
        pol = self._policy
        url, label = pol.url(endpoint), pol.label(endpoint, params)
        attempt = 0
        while True:
            pause = pol.pause_before_request()
            if pause > 0:
                self._sleep(pause)
            pol.requests += 1
            try:
                resp = self._client.get(url, params=params)
            except httpx.TransportError as e:
                wait = pol.on_transport_error(e, label, attempt).wait_s
            else:
                retry = pol.on_response(resp, label, attempt)
                if retry is None:
                    try:
                        return orjson.loads(resp.content)
                    except orjson.JSONDecodeError:
                        raise RestError(
                            f"GET {label}: HTTP {resp.status_code} but the body is not JSON: {_excerpt(resp.text)}",
                            endpoint=label,
                            status=resp.status_code,
                        ) from None
                wait = retry.wait_s
            self._sleep(wait)
            attempt += 1

    def klines(
        self,
        symbol: str,
        interval: str = "1m",
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> KlineTable:
        """Klines of ``symbol`` with ``open_time`` in ``[start_ms, end_ms]``, fetched in pages of 1000.

        ``limit`` caps the rows returned (None: all up to ``end_ms``, or to the latest kline). Without
        ``start_ms`` the latest ``limit`` (default 1000) klines up to ``end_ms`` are returned.
        """
        pager = _KlinePager(symbol, interval, start_ms, end_ms, limit)
        while not pager.done:
            pager.add(_check_kline_rows(self._get("klines", pager.params()), self._policy.prefix + "/klines"))
        return pager.table()

    def depth_snapshot(self, symbol: str, limit: int = 1000) -> DepthSnapshotRest:
        """The order book of ``symbol`` down to ``limit`` levels per side."""
        sym = symbol.upper()
        obj = self._get("depth", {"symbol": sym, "limit": limit})
        return _parse_depth(sym, obj, self._policy.prefix + "/depth")

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> BinanceRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncBinanceRest:
    """The asyncio twin of :class:`BinanceRest` (same arguments; ``sleep`` is awaited)."""

    def __init__(
        self,
        base_url: str = "https://api.binance.com",
        *,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        weight_limit_1m: int = 6000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        api_prefix: str | None = None,
        backoff_s: float = 0.5,
        max_wait_s: float = 600.0,
        rng: random.Random | None = None,
    ) -> None:
        self._policy = _Policy(
            base_url, api_prefix, max_retries, weight_limit_1m, backoff_s, max_wait_s, rng or random.Random()
        )
        self._sleep = sleep
        self._client = httpx.AsyncClient(transport=transport, **_client_kwargs(timeout_s))

    @property
    def used_weight(self) -> int | None:
        return self._policy.used_weight

    async def _get(self, endpoint: str, params: dict[str, Any]) -> Any:
        pol = self._policy
        url, label = pol.url(endpoint), pol.label(endpoint, params)
        attempt = 0
        while True:
            pause = pol.pause_before_request()
            if pause > 0:
                await self._sleep(pause)
            pol.requests += 1
            try:
                resp = await self._client.get(url, params=params)
            except httpx.TransportError as e:
                wait = pol.on_transport_error(e, label, attempt).wait_s
            else:
                retry = pol.on_response(resp, label, attempt)
                if retry is None:
                    try:
                        return orjson.loads(resp.content)
                    except orjson.JSONDecodeError:
                        raise RestError(
                            f"GET {label}: HTTP {resp.status_code} but the body is not JSON: {_excerpt(resp.text)}",
                            endpoint=label,
                            status=resp.status_code,
                        ) from None
                wait = retry.wait_s
            await self._sleep(wait)
            attempt += 1

    async def klines(
        self,
        symbol: str,
        interval: str = "1m",
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> KlineTable:
        """See :meth:`BinanceRest.klines`."""
        pager = _KlinePager(symbol, interval, start_ms, end_ms, limit)
        while not pager.done:
            pager.add(_check_kline_rows(await self._get("klines", pager.params()), self._policy.prefix + "/klines"))
        return pager.table()

    async def depth_snapshot(self, symbol: str, limit: int = 1000) -> DepthSnapshotRest:
        """See :meth:`BinanceRest.depth_snapshot`."""
        sym = symbol.upper()
        obj = await self._get("depth", {"symbol": sym, "limit": limit})
        return _parse_depth(sym, obj, self._policy.prefix + "/depth")

    async def aclose(self) -> None:
        await self._client.aclose()

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncBinanceRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
