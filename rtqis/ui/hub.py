"""The live hub: ONE Kafka consumer per dashboard server process, fanned out to every browser session.

A daemon thread assigns the partitions of the topics the dashboard shows (no consumer group, no commits),
starting each from a time (:func:`rtqis.kafka.offsets.topic_offsets`, which also works on the embedded
broker), decodes every message once, and every ``batch_ms`` (200 ms) turns what arrived into one
:class:`Batch` of numpy columns:

- candles per (symbol, interval) and pair signals per pair, one row per time key (newest version);
- the top of book per symbol, downsampled to the last quote of each 100 ms;
- trades per symbol (the last 1,000 of the batch at most), the latest depth snapshot per symbol,
  the latest ADF result per pair, and alerts (``live`` once the consumer has caught up with the end
  offsets it saw at start, so old alerts never pop up as new).

The batch updates the hub's own bounded buffers (the live part every new session starts from) and is
then handed to each subscriber's callback, which keeps it for its session (a session's bounded
:class:`~rtqis.ui.session.Inbox`, drained by the session's own 100 ms turn). Arrays are shared, never
modified after publication; Bokeh models stay in their session. Bounded everywhere: buffers keep the
last N rows per series, and a session that does not take its batches costs at most its inbox.

Every ``lag_every_s`` (5 s) the hub also measures the sink's lag (:class:`SinkLag`): the sink group's
committed offsets against the end offsets of the sink topics the hub reads (the high watermarks of its
own fetches, which are right even on the embedded broker, see :mod:`rtqis.kafka.offsets`), in messages
and in seconds (how long ago the ends were where the sink is now).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from rtqis.analytics.pair_model import NEW_SIGNAL_FIELDS
from rtqis.analytics.pair_model import SIGNAL_FIELDS as SIGNAL_NUMBERS
from rtqis.errors import DecodeError, RtqisError
from rtqis.intervals import stored_interval_ms
from rtqis.kafka.clients import new_consumer
from rtqis.kafka.offsets import topic_offsets
from rtqis.schemas import models as m
from rtqis.schemas.codec import decode
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame
from rtqis.settings import Settings
from rtqis.sinks.sink import SINK_TOPICS, sink_group
from rtqis.topics import ADF, ALERTS, BOOK, CANDLES_1M, CANDLES_5M, DEADLETTER, DEPTH, PAIR, TRADES, TopicSpec
from rtqis.ui import tables as tb

__all__ = [
    "BOOK_FIELDS",
    "CANDLE_FIELDS",
    "SIGNAL_FIELDS",
    "TRADE_FIELDS",
    "AlertEvent",
    "Batch",
    "HubSnapshot",
    "HubStats",
    "LiveHub",
    "SinkLag",
    "get_hub",
]

log = logging.getLogger(__name__)

CANDLE_FIELDS: dict[str, Any] = {
    "open_time": np.int64,
    "close_time": np.int64,
    "open": np.float64,
    "high": np.float64,
    "low": np.float64,
    "close": np.float64,
    "volume": np.float64,
    "quote_volume": np.float64,
    "trades": np.int64,
    "taker_buy_volume": np.float64,
    "vwap": np.float64,
    "closed": np.bool_,
}
SIGNAL_FIELDS: dict[str, Any] = {
    "time": np.int64,
    "x": np.float64,
    "y": np.float64,
    **dict.fromkeys(SIGNAL_NUMBERS, np.float64),
    "n_obs": np.int64,
    "flags": object,  # ';'-joined
    # added in #20: null (NaN / None) in rows of an older worker or store
    **dict.fromkeys(NEW_SIGNAL_FIELDS, np.float64),
    "coint": object,  # "cointegrated" / "not_cointegrated" / "insufficient_data" or None
    "position": np.float64,  # +1 / -1 / 0 (NaN: unknown)
    "below_cost": np.float64,  # entries withheld by the cost gate so far (NaN: unknown)
}
BOOK_FIELDS: dict[str, Any] = {
    "t": np.int64,
    "bid": np.float64,
    "ask": np.float64,
    "bid_qty": np.float64,
    "ask_qty": np.float64,
}
TRADE_FIELDS: dict[str, Any] = {
    "t": np.int64,
    "price": np.float64,
    "qty": np.float64,
    "buyer_maker": np.bool_,
    "trade_id": np.int64,
}

CANDLE_TOPICS: dict[str, TopicSpec] = {"1m": CANDLES_1M, "5m": CANDLES_5M}


@dataclass(frozen=True)
class AlertEvent:
    alert: m.Alert
    live: bool  # consumed after the hub caught up: a new alert, worth a toast


@dataclass(frozen=True)
class HubStats:
    """What the status bar shows. Replaced as a whole (readers on other threads see one consistent value)."""

    bootstrap: str
    state: str = "starting"  # starting | connecting | catching up | live | broker unreachable ...
    connected: bool = False
    msgs_per_s: float = 0.0
    ticks_per_s: float = 0.0
    last_msg_wall_ms: int | None = None  # local wall clock when the last message was received
    deadletters: int = 0
    sessions: int = 0
    messages: int = 0
    sink_lag: int | None = None  # messages the sink has not stored yet (None: unknown)
    sink_lag_s: float | None = None  # how long ago the broker's end was where the sink is (None: longer)


@dataclass(frozen=True)
class Batch:
    """What arrived during one batch period, ready to stream (every table sorted by its key)."""

    seq: int
    candles: dict[tuple[str, str], tb.Cols] = field(default_factory=dict)
    signals: dict[str, tb.Cols] = field(default_factory=dict)
    book: dict[str, tb.Cols] = field(default_factory=dict)
    trades: dict[str, tb.Cols] = field(default_factory=dict)
    depth: dict[str, m.DepthSnapshot] = field(default_factory=dict)
    adf: dict[str, m.AdfResult] = field(default_factory=dict)
    alerts: tuple[AlertEvent, ...] = ()


@dataclass(frozen=True)
class HubSnapshot:
    """The hub's buffers as of batch ``seq`` (a new session's live part; batches after ``seq`` follow)."""

    seq: int
    candles: dict[tuple[str, str], tb.Cols]
    signals: dict[str, tb.Cols]
    book: dict[str, tb.Cols]
    trades: dict[str, tb.Cols]
    depth: dict[str, m.DepthSnapshot]
    adf: dict[str, m.AdfResult]
    alerts: tuple[AlertEvent, ...]


class SinkLag:
    """The sink's lag from samples of end offsets: pure, fed by the hub thread.

    :meth:`sample` records the ends seen at a wall time (the last ``keep`` samples); :meth:`lag` gives,
    for the sink's committed offsets, the messages behind and the seconds behind: now minus the latest
    sample whose every end the sink has passed (None when no kept sample qualifies: longer than kept)."""

    def __init__(self, keep: int = 720) -> None:
        self.samples: deque[tuple[int, dict[tuple[str, int], int]]] = deque(maxlen=keep)

    def sample(self, now_ms: int, ends: dict[tuple[str, int], int]) -> None:
        self.samples.append((now_ms, dict(ends)))

    def lag(self, now_ms: int, committed: dict[tuple[str, int], int]) -> tuple[int, float | None]:
        """(messages behind, seconds behind) against the newest sample; partitions without a commit count
        from 0 (the sink has stored nothing of them)."""
        if not self.samples:
            return 0, 0.0
        _, ends = self.samples[-1]
        behind = sum(max(0, end - committed.get(k, 0)) for k, end in ends.items())
        if behind == 0:
            return 0, 0.0
        for t, old in reversed(self.samples):
            if all(committed.get(k, 0) >= end for k, end in old.items()):
                return behind, max(0.0, (now_ms - t) / 1000.0)
        return behind, None


class _Staging:
    """Messages received since the last batch, by series."""

    def __init__(self) -> None:
        self.candles: dict[tuple[str, str], list[m.Candle]] = {}
        self.signals: dict[str, list[m.PairSignal]] = {}
        self.book: dict[str, list[tb.Cols]] = {}
        self.trades: dict[str, list[tb.Cols]] = {}
        self.depth: dict[str, m.DepthSnapshot] = {}
        self.adf: dict[str, m.AdfResult] = {}
        self.alerts: list[AlertEvent] = []
        self.count = 0


class LiveHub:
    """One consumer thread for the whole server process; sessions :meth:`subscribe` to its batches."""

    def __init__(
        self,
        settings: Settings,
        *,
        batch_ms: int = 200,
        lookback_ms: int = 15 * 60_000,
        tick_lookback_ms: int = 60_000,
        book_bucket_ms: int = 100,
        caps: dict[str, int] | None = None,
        lag_every_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.batch_s = batch_ms / 1000.0
        self.lookback_ms = lookback_ms
        self.tick_lookback_ms = tick_lookback_ms
        self.book_bucket_ms = book_bucket_ms
        self.caps = {"candles": 1500, "signals": 20_000, "book": 900, "trades": 600, "alerts": 50}
        self.caps["batch_trades"] = 1000
        self.caps.update(caps or {})
        self.intervals = [iv for iv in settings.candle_intervals if iv in CANDLE_TOPICS]
        ns = settings.namespace
        self._specs: dict[str, TopicSpec] = {
            s.full_name(ns): s for s in (TRADES, BOOK, DEPTH, PAIR, ADF, ALERTS, DEADLETTER)
        }
        for iv in self.intervals:
            self._specs[CANDLE_TOPICS[iv].full_name(ns)] = CANDLE_TOPICS[iv]
        self._lock = threading.Lock()
        self._subs: dict[int, Callable[[Batch], None]] = {}
        self._next_sub = 0
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = HubStats(bootstrap=settings.bootstrap)
        # buffers (replaced, never mutated in place)
        self._candles: dict[tuple[str, str], tb.Cols] = {}
        self._signals: dict[str, tb.Cols] = {}
        self._book: dict[str, tb.Cols] = {}
        self._trades: dict[str, tb.Cols] = {}
        self._depth: dict[str, m.DepthSnapshot] = {}
        self._adf: dict[str, m.AdfResult] = {}
        self._alerts: deque[AlertEvent] = deque(maxlen=self.caps["alerts"])
        # consumer state (hub thread only)
        self._catchup: dict[tuple[str, int], int] = {}
        self._live = False
        self._rate_window: deque[tuple[float, int, int]] = deque()
        self._msgs = 0
        self._ticks = 0
        self._deadletters = 0
        self._last_msg_wall_ms: int | None = None
        self.lag_every_s = lag_every_s
        self._sink_lag = SinkLag()
        self._sink_topics = {spec.full_name(ns) for spec in SINK_TOPICS}
        self._lag_consumer: Consumer | None = None

    # ------------------------------------------------------------------------------ public (any thread)

    def start(self) -> LiveHub:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rtqis-ui-hub", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._lag_consumer is not None:
            self._lag_consumer.close()
            self._lag_consumer = None

    def subscribe(self, callback: Callable[[Batch], None]) -> tuple[HubSnapshot, Callable[[], None]]:
        """Register ``callback`` (called on the hub thread with every batch after the returned snapshot).

        Returns the snapshot and a function that unsubscribes. The callback must not block: it should only
        keep the batch for its session, in bounded memory (:meth:`rtqis.ui.session.Inbox.put`).
        """
        with self._lock:
            sid = self._next_sub
            self._next_sub += 1
            self._subs[sid] = callback
            snap = self._snapshot_locked()
            self.stats = replace(self.stats, sessions=len(self._subs))

        def unsubscribe() -> None:
            with self._lock:
                self._subs.pop(sid, None)
                self.stats = replace(self.stats, sessions=len(self._subs))

        return snap, unsubscribe

    def snapshot(self) -> HubSnapshot:
        with self._lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> HubSnapshot:
        return HubSnapshot(
            seq=self._seq,
            candles=dict(self._candles),
            signals=dict(self._signals),
            book=dict(self._book),
            trades=dict(self._trades),
            depth=dict(self._depth),
            adf=dict(self._adf),
            alerts=tuple(self._alerts),
        )

    # ------------------------------------------------------------------------------ hub thread

    def _set(self, **kw: Any) -> None:
        self.stats = replace(self.stats, **kw)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                c = self._connect()
            except RtqisError as e:
                self._set(connected=False, state=f"broker unreachable ({e})")
                log.warning("dashboard consumer: %s; retrying", e)
                self._stop.wait(2.0)
                continue
            except Exception:
                log.exception("dashboard consumer could not start; retrying")
                self._set(connected=False, state="consumer error (see the server log)")
                self._stop.wait(2.0)
                continue
            try:
                self._consume(c)
            except Exception:
                log.exception("dashboard consumer failed; reconnecting")
                self._set(connected=False, state="consumer error (see the server log)")
                self._stop.wait(1.0)
            finally:
                try:
                    c.close()
                except (KafkaException, RuntimeError):
                    pass

    def _connect(self) -> Consumer:
        """Assign every partition: analytics/candles from ``now - lookback``, ticks from ``now - tick_lookback``
        (the seam with DuckDB history is handled by key upserts), dead letters from their end (counted)."""
        s = self.settings
        self._set(state="connecting", connected=False)
        now = int(time.time() * 1000)
        ns = s.namespace
        long_topics = [t.full_name(ns) for t in (PAIR, ADF, ALERTS)] + [
            CANDLE_TOPICS[iv].full_name(ns) for iv in self.intervals
        ]
        tick_topics = [t.full_name(ns) for t in (TRADES, BOOK, DEPTH)]
        starts: dict[tuple[str, int], int] = {}
        ends: dict[tuple[str, int], int] = {}
        for topics, since in ((long_topics, now - self.lookback_ms), (tick_topics, now - self.tick_lookback_ms)):
            for r in topic_offsets(s, topics, at_time_ms=since):
                starts[(r.topic, r.partition)] = r.at_time if r.at_time is not None else r.end
                ends[(r.topic, r.partition)] = r.end
        dl = topic_offsets(s, [DEADLETTER.full_name(ns)])
        deadletters = sum(r.end - r.earliest for r in dl)
        for r in dl:
            starts[(r.topic, r.partition)] = r.end
        self._catchup = {k: e for k, e in ends.items() if starts[k] < e}
        self._live = not self._catchup
        overrides: dict[str, Any] = {"enable.partition.eof": False, "error_cb": self._on_error}
        c = new_consumer(s, **overrides)
        c.assign([TopicPartition(t, p, off) for (t, p), off in starts.items()])
        self._deadletters = deadletters
        self._set(connected=True, deadletters=deadletters, state="live" if self._live else "catching up")
        log.info(
            "dashboard consumer assigned %d partitions (%d to catch up), %d dead letters so far",
            len(starts),
            len(self._catchup),
            deadletters,
        )
        return c

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._set(connected=False, state=f"broker unreachable ({err.str()})")

    def _consume(self, c: Consumer) -> None:
        staging = _Staging()
        next_batch = time.monotonic() + self.batch_s
        last_probe = time.monotonic()
        next_lag = time.monotonic() + min(1.0, self.lag_every_s)
        while not self._stop.is_set():
            msgs = c.consume(2000, 0.05)
            now = time.monotonic()
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.debug("consumer error: %s", err)
                    continue
                self._handle(msg, staging)
            if msgs:
                last_probe = now
                self._last_msg_wall_ms = int(time.time() * 1000)
                if not self.stats.connected:
                    self._set(connected=True, state="live" if self._live else "catching up")
            elif now - last_probe > 3.0:  # quiet: is the broker still there?
                last_probe = now
                try:
                    c.list_topics(timeout=2.0)
                    if not self.stats.connected:
                        self._set(connected=True, state="live" if self._live else "catching up")
                except KafkaException as e:
                    self._set(connected=False, state=f"broker unreachable ({e})")
            if self.lag_every_s and now >= next_lag:
                self._measure_sink_lag(c)
                next_lag = now + self.lag_every_s
            if now >= next_batch:
                self._update_rates(now)
                if staging.count:
                    self._publish(staging)
                    staging = _Staging()
                next_batch = now + self.batch_s

    def _handle(self, msg: Any, st: _Staging) -> None:
        topic = msg.topic()
        spec = self._specs.get(topic)
        key = (topic, msg.partition())
        live = self._live  # a message read while catching up (even the last one) is history
        if not live and key in self._catchup and msg.offset() + 1 >= self._catchup[key]:
            del self._catchup[key]
            if not self._catchup:
                self._live = True
                self._set(state="live")
        self._msgs += 1
        if spec is None:
            return
        if spec is DEADLETTER:
            self._deadletters += 1
            return
        try:
            obj = decode(msg.value(), msg.headers(), spec.value_schema)
        except DecodeError as e:
            log.debug("skipping undecodable %s@%d: %s", topic, msg.offset(), e)
            return
        st.count += 1
        if isinstance(obj, Frame):
            self._ticks += len(obj)
            c = obj.cols
            if obj.type is TRADE_FRAME:
                st.trades.setdefault(obj.symbol, []).append(
                    {
                        "t": c["trade_time"],  # type: ignore[dict-item]
                        "price": c["price"],  # type: ignore[dict-item]
                        "qty": c["qty"],  # type: ignore[dict-item]
                        "buyer_maker": c["buyer_maker"],  # type: ignore[dict-item]
                        "trade_id": c["trade_id"],  # type: ignore[dict-item]
                    }
                )
            elif obj.type is BOOK_FRAME:
                t = c["event_time"] if c["event_time"] is not None else c["recv_time"]
                st.book.setdefault(obj.symbol, []).append(
                    {
                        "t": t,  # type: ignore[dict-item]
                        "bid": c["bid_price"],  # type: ignore[dict-item]
                        "ask": c["ask_price"],  # type: ignore[dict-item]
                        "bid_qty": c["bid_qty"],  # type: ignore[dict-item]
                        "ask_qty": c["ask_qty"],  # type: ignore[dict-item]
                    }
                )
        elif isinstance(obj, m.Candle):
            st.candles.setdefault((obj.symbol, obj.interval), []).append(obj)
        elif isinstance(obj, m.PairSignal):
            st.signals.setdefault(obj.pair, []).append(obj)
        elif isinstance(obj, m.DepthSnapshot):
            st.depth[obj.symbol] = obj
        elif isinstance(obj, m.AdfResult):
            prev = st.adf.get(obj.pair)
            if prev is None or obj.time >= prev.time:
                st.adf[obj.pair] = obj
        elif isinstance(obj, m.Alert):
            st.alerts.append(AlertEvent(obj, live=live))

    def _measure_sink_lag(self, c: Consumer) -> None:
        """Sample the ends of the sink topics this hub reads (its fetches' high watermarks) and read the
        sink group's committed offsets (a second consumer with that group id that never joins it)."""
        parts = [tp for tp in c.assignment() if tp.topic in self._sink_topics]
        ends: dict[tuple[str, int], int] = {}
        for tp in parts:
            try:
                lo, hi = c.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if hi >= 0:
                ends[(tp.topic, tp.partition)] = hi
        if not ends:
            return
        try:
            if self._lag_consumer is None:
                self._lag_consumer = new_consumer(self.settings, sink_group(self.settings))
            got = self._lag_consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=1.0)
        except (KafkaException, RuntimeError) as e:
            log.debug("sink lag: committed offsets not read: %s", e)
            return
        committed = {(tp.topic, tp.partition): tp.offset for tp in got if tp.offset >= 0}
        now_ms = int(time.time() * 1000)
        self._sink_lag.sample(now_ms, ends)
        if not committed:  # no sink has committed in this namespace: say nothing rather than "behind"
            self._set(sink_lag=None, sink_lag_s=None)
            return
        behind, seconds = self._sink_lag.lag(now_ms, committed)
        self._set(sink_lag=behind, sink_lag_s=seconds)

    def _update_rates(self, now: float) -> None:
        self._rate_window.append((now, self._msgs, self._ticks))
        while len(self._rate_window) > 2 and now - self._rate_window[0][0] > 2.0:
            self._rate_window.popleft()
        t0, m0, k0 = self._rate_window[0]
        dt = now - t0
        self._set(
            msgs_per_s=(self._msgs - m0) / dt if dt > 0 else 0.0,
            ticks_per_s=(self._ticks - k0) / dt if dt > 0 else 0.0,
            messages=self._msgs,
            deadletters=self._deadletters,
            last_msg_wall_ms=self._last_msg_wall_ms,
        )

    def _publish(self, st: _Staging) -> None:
        batch_trades = self.caps["batch_trades"]
        candles = {k: tb.upsert({}, tb.rows_to_cols(v, CANDLE_FIELDS), "open_time") for k, v in st.candles.items()}
        signals = {k: tb.upsert({}, tb.rows_to_cols(v, SIGNAL_FIELDS), "time") for k, v in st.signals.items()}
        for cols in signals.values():
            cols["flags"] = _join_flags(cols["flags"])
        book = {k: tb.bucket_last(_ordered(tb.concat(v), "t"), "t", self.book_bucket_ms) for k, v in st.book.items()}
        trades: dict[str, tb.Cols] = {}
        for k, v in st.trades.items():
            cols = tb.concat(v)
            n = tb.length(cols)
            trades[k] = tb.slice_rows(cols, max(0, n - batch_trades))
        with self._lock:
            self._seq += 1
            batch = Batch(
                seq=self._seq,
                candles=candles,
                signals=signals,
                book=book,
                trades=trades,
                depth=dict(st.depth),
                adf=dict(st.adf),
                alerts=tuple(st.alerts),
            )
            for key, new in candles.items():
                rows = tb.upsert(self._candles.get(key, {}), new, "open_time", self.caps["candles"])
                # old bars (an import of last year's file) are for DuckDB, not for the live window
                span = self.caps["candles"] * stored_interval_ms(key[1])
                self._candles[key] = tb.time_window(rows, "open_time", int(rows["open_time"][-1]) - span, None)
            for pair, new in signals.items():
                self._signals[pair] = tb.upsert(self._signals.get(pair, {}), new, "time", self.caps["signals"])
            for sym, new in book.items():
                self._book[sym] = tb.upsert(self._book.get(sym, {}), new, "t", self.caps["book"])
            for sym, new in trades.items():
                both = tb.concat([self._trades.get(sym, {}), new])
                self._trades[sym] = tb.slice_rows(both, max(0, tb.length(both) - self.caps["trades"]))
            self._depth.update(st.depth)
            for k, a in st.adf.items():
                if k not in self._adf or a.time >= self._adf[k].time:
                    self._adf[k] = a
            self._alerts.extend(st.alerts)
            subs = list(self._subs.values())
        for cb in subs:
            try:
                cb(batch)
            except Exception:  # a closing session must not stop the others
                log.debug("a session callback failed", exc_info=True)


def _join_flags(flags: np.ndarray) -> np.ndarray:
    return np.array([";".join(f) if f else "" for f in flags], dtype=object)


def _ordered(cols: tb.Cols, key: str) -> tb.Cols:
    if not cols:
        return cols
    k = cols[key]
    if len(k) > 1 and np.any(k[1:] < k[:-1]):
        return tb.take(cols, np.argsort(k, kind="stable"))
    return cols


_HUB: LiveHub | None = None
_HUB_LOCK = threading.Lock()


def get_hub(settings: Settings) -> LiveHub:
    """The process's hub, started on first use (``panel serve --setup`` calls this before any session)."""
    global _HUB
    with _HUB_LOCK:
        if _HUB is None:
            _HUB = LiveHub(settings).start()
        return _HUB
