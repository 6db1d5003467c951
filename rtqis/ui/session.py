"""One browser session's data path: the history/live seam, per-chart queues, redraw turns, page state.

Life of a session (wired by :class:`rtqis.ui.page.Dashboard`):

1. on load it subscribes to the process's :class:`~rtqis.ui.hub.LiveHub` (a snapshot of its live buffers
   plus every later batch, kept in its :class:`Inbox` for the next turn) and reads history from DuckDB in
   a thread of :data:`IO_POOL`; batches arriving meanwhile are kept by the view's :class:`ViewLoad`;
2. the charts are filled with history upserted with the live snapshot and the kept batches by time key
   (:func:`candle_rows`, :func:`signal_rows`: no gap, no duplicate at the seam), then every new batch is
   queued per chart (:class:`ChartQueues`), and a 100 ms turn (:class:`Turns`) redraws one chart:
   ``stream(..., rollover=N)`` for new keys, ``patch`` for keys already drawn (:func:`upsert_tail`);
3. what the text panels show is kept in :class:`PageState` (rules for which ADF result and alerts count).

Every buffer a session keeps of what Kafka brings is bounded, so a session that does not drain (a
stalled or throttled browser tab, a history read that hangs) never grows memory: the hub hands batches
to an :class:`Inbox` (at most :data:`INBOX_BATCHES`, the oldest dropped and counted) that the 100 ms turn
drains only while the browser reads its websocket (:func:`socket_backlog` under
:data:`SOCKET_BACKLOG_BYTES`); a view loading its history keeps at most :data:`VIEW_PENDING_BATCHES`;
the rows waiting for a chart are capped at what the chart keeps (its rollover).

Everything here but :func:`in_thread` and :func:`upsert_tail` is pure and tested without a server.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from rtqis.schemas import models as m
from rtqis.ui import tables as tb
from rtqis.ui.hub import AlertEvent, Batch
from rtqis.ui.panels import LastTrade, ManualAdf, Quote, last_quote, last_trade, latest_signal

__all__ = [
    "BOOK_ROLLOVER",
    "CANDLE_HISTORY_BARS",
    "CANDLE_ROLLOVER",
    "INBOX_BATCHES",
    "IO_POOL",
    "ROTATION",
    "SIGNAL_HISTORY_MS",
    "SIGNAL_ROLLOVER",
    "SOCKET_BACKLOG_BYTES",
    "TRADE_ROLLOVER",
    "VIEW_PENDING_BATCHES",
    "ChartQueues",
    "Inbox",
    "PageState",
    "Turns",
    "ViewLoad",
    "candle_rows",
    "in_thread",
    "newest",
    "signal_rows",
    "socket_backlog",
    "upsert_tail",
]

log = logging.getLogger(__name__)

CANDLE_HISTORY_BARS = 600  # read from DuckDB at open / on a switch
CANDLE_ROLLOVER = 1500
SIGNAL_HISTORY_MS = 3600_000
SIGNAL_ROLLOVER = 3600  # 1 h of 1 s samples
BOOK_ROLLOVER = 900  # 90 s of 100 ms quotes
TRADE_ROLLOVER = 600
ALERTS_KEPT = 20
#: hub batches (200 ms each) a session keeps undrained: 60 s, then the oldest are dropped and counted
INBOX_BATCHES = 300
#: hub batches a view keeps while its history loads: 60 s (a slower read leaves a counted gap)
VIEW_PENDING_BATCHES = 300
#: rows a chart's queue keeps at most when it has no rollover of its own
QUEUE_ROWS = 10_000
#: bytes sent to the browser and not read yet above which a session stops drawing and draining (a
#: stalled tab): what it would send is kept in its bounded buffers instead of Tornado's unbounded one
SOCKET_BACKLOG_BYTES = 4 << 20

# charts redrawn on odd turns, one per turn, when they have new rows (see Turns)
ROTATION = ("z", "candles", "hedge", "z", "candles", "spread", "depth", "fair")

# history reads, CSV building, uploads and ADF runs: never on the server's event loop
IO_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rtqis-ui-io")


def in_thread(doc: Any, closed: Callable[[], bool], fn: Callable[[], Any], done: Callable[[Future[Any]], None]) -> None:
    """Run ``fn`` in :data:`IO_POOL`, then ``done(future)`` on the session's event loop (``doc`` locked),
    unless the session has closed meanwhile."""

    def back(f: Future[Any]) -> None:
        if not closed() and doc is not None:
            doc.add_next_tick_callback(partial(done, f))

    IO_POOL.submit(fn).add_done_callback(back)


class Inbox:
    """The batches the hub handed to one session and the session has not taken yet: at most ``maxlen``,
    the oldest dropped and counted in :attr:`dropped` (a session that stops draining costs a bounded
    amount of memory). :meth:`put` runs on the hub thread, :meth:`take` on the session's event loop."""

    def __init__(self, maxlen: int = INBOX_BATCHES) -> None:
        self._q: deque[Batch] = deque()
        self._lock = threading.Lock()
        self.maxlen = maxlen
        self.dropped = 0

    def put(self, batch: Batch) -> None:
        """Keep ``batch`` (the hub's subscriber callback: never blocks)."""
        with self._lock:
            self._q.append(batch)
            while len(self._q) > self.maxlen:
                self._q.popleft()
                self.dropped += 1

    def take(self) -> list[Batch]:
        """Every batch kept, oldest first; the inbox is empty after."""
        with self._lock:
            out = list(self._q)
            self._q.clear()
        return out

    def __len__(self) -> int:
        return len(self._q)


def socket_backlog(doc: Any) -> int:
    """Bytes written to this session's websocket(s) that the browser has not read yet; 0 if unknown.

    Tornado buffers what a websocket cannot send without bound, so a stalled tab would grow the server by
    everything drawn for it. Read from Bokeh's and Tornado's internals (ServerSession's subscribed
    connections -> WSHandler -> IOStream write buffer), best effort: anything missing counts as 0."""
    try:
        session = doc.session_context._session
        total = 0
        for conn in session._subscribed_connections:
            ws = conn._socket.ws_connection
            if ws is not None and ws.stream is not None:
                total += len(ws.stream._write_buffer)
        return total
    except (AttributeError, TypeError):
        return 0


class ViewLoad:
    """Load state of one view: batches kept while its history loads (at most ``maxlen``, the oldest
    dropped and counted), and the hub batch its data includes."""

    def __init__(self, maxlen: int = VIEW_PENDING_BATCHES) -> None:
        self.pending: list[Batch] | None = []  # None once loaded
        self.seq = -1  # batches up to this one are already in the drawn data
        self.maxlen = maxlen
        self.dropped = 0

    def start_loading(self) -> None:
        self.pending = []

    def keep(self, batch: Batch) -> None:
        """Keep a batch that arrived while the history loads (call only while :attr:`pending` is a list)."""
        assert self.pending is not None
        self.pending.append(batch)
        if len(self.pending) > self.maxlen:
            del self.pending[0]
            self.dropped += 1

    def loaded(self, seq: int) -> list[Batch]:
        """Mark the view filled with the hub snapshot ``seq``; returns the kept batches newer than it."""
        kept, self.pending, self.seq = self.pending or [], None, seq
        return [b for b in kept if b.seq > seq]


class ChartQueues:
    """Rows waiting for their chart's turn, one table per chart, sorted by key with one row per key.

    A chart's queue keeps at most ``caps[chart]`` rows (its rollover; :data:`QUEUE_ROWS` for others): the
    newest. Drawing all of them would leave the chart with the same rows, since the chart keeps only its
    last rollover rows, so a chart that is not drawn for a while (a stalled tab) costs bounded memory."""

    def __init__(self, caps: Mapping[str, int] | None = None) -> None:
        self.pending: dict[str, tb.Cols] = {}
        self.caps = dict(caps or {})

    def queue(self, chart: str, cols: tb.Cols | None, key: str) -> None:
        if cols is None or not tb.length(cols):
            return
        # always through upsert: one batch can hold a key twice (at-least-once delivery: a signal sent
        # again after a worker restart, two producers of one pair) or out of order, and the tail plan
        # streams its rows as they are (a duplicate point, a line that runs backwards)
        rows = tb.upsert(self.pending.get(chart) or {}, cols, key)
        cap = self.caps.get(chart, QUEUE_ROWS)
        n = tb.length(rows)
        self.pending[chart] = tb.slice_rows(rows, n - cap) if n > cap else rows

    def pop(self, chart: str) -> tb.Cols | None:
        return self.pending.pop(chart, None)

    def __contains__(self, chart: object) -> bool:
        return chart in self.pending


class Turns:
    """What each 100 ms turn redraws.

    The browser paints every chart whose data changed in the same animation frame, and with a software
    canvas each chart costs several ms of main thread (paint, canvas upload, style): nine charts in one
    frame took 50-100 ms. One chart per turn keeps a frame far under 50 ms. Even turns redraw the top of
    book (5 Hz); odd turns the text panels (1 Hz) or the next chart with new rows, in a rotation
    (:data:`ROTATION`) where the z-score and the candles come twice as often as the depth, hedge ratio,
    spread and fair value.
    """

    def __init__(self, rotation: Sequence[str] = ROTATION) -> None:
        self.rotation = tuple(rotation)
        self.turn = 0
        self.pos = 0

    def next(self, ready: Callable[[str], bool]) -> tuple[str, ...]:
        """The next turn: ``("book", "trades")``, ``("text",)``, the one chart of the rotation that is
        ``ready`` (has rows to draw), or ``()``."""
        turn = self.turn
        self.turn += 1
        if turn % 2 == 0:
            return ("book", "trades")
        if turn % 10 == 1:
            return ("text",)
        n = len(self.rotation)
        for i in range(n):
            chart = self.rotation[(self.pos + i) % n]
            if ready(chart):
                self.pos = (self.pos + i + 1) % n
                return (chart,)
        return ()


def newest(cols: tb.Cols | None, key: str) -> int:
    """The last (newest) key of a sorted table, 0 when empty."""
    if not cols or not tb.length(cols):
        return 0
    return int(cols[key][-1])


def _upsert_all(rows: tb.Cols, later: Sequence[tb.Cols | None], key: str) -> tb.Cols:
    for cols in later:
        if cols:
            rows = tb.upsert(rows, cols, key)
    return rows


def candle_rows(
    hist: tb.Cols, live: tb.Cols, imported: tb.Cols | None, interval_ms: int, later: Sequence[tb.Cols | None] = ()
) -> tb.Cols:
    """The candles a chart starts from: history, then live, then this session's imports, then the rows of
    the batches that arrived while history loaded (``later``), upserted by open time; only the live window
    (the last :data:`CANDLE_ROLLOVER` bars): older bars stay in DuckDB.

    The batches go into the data the chart is filled with, not into a stream sent with it: Bokeh serialises
    a data replacement when the held events are sent, by then with the streamed rows in it, and the browser
    would draw those rows twice (then apply later patches at the wrong rows)."""
    rows = tb.upsert(hist, live, "open_time")
    if imported:
        rows = tb.upsert(rows, imported, "open_time")
    rows = _upsert_all(rows, later, "open_time")
    if tb.length(rows):
        rows = tb.time_window(rows, "open_time", int(rows["open_time"][-1]) - CANDLE_ROLLOVER * interval_ms, None)
    return tb.slice_rows(rows, max(0, tb.length(rows) - CANDLE_ROLLOVER))


def signal_rows(hist: tb.Cols, live: tb.Cols, later: Sequence[tb.Cols | None] = ()) -> tb.Cols:
    """The PairSignals the pair charts start from: history, live, then the rows of the batches that arrived
    while history loaded (``later``, see :func:`candle_rows`), upserted by time, the last
    :data:`SIGNAL_ROLLOVER`."""
    rows = _upsert_all(tb.upsert(hist, live, "time"), later, "time")
    return tb.slice_rows(rows, max(0, tb.length(rows) - SIGNAL_ROLLOVER))


def upsert_tail(src: Any, cols: tb.Cols, key: str, rollover: int, patch: bool = True) -> None:
    """Apply ``cols`` (sorted, one row per key) to a Bokeh ``ColumnDataSource``: ``patch`` rows whose key
    is drawn (unless ``patch`` is False), ``stream`` newer ones with ``rollover``."""
    drawn = np.asarray(src.data[key])
    plan = tb.tail_plan(drawn, cols, key)
    if patch and plan.patches:
        patches: dict[str, list[tuple[int, Any]]] = {}
        for idx, row in plan.patches:
            for c, v in cols.items():
                patches.setdefault(c, []).append((idx, v[row].item()))  # Python scalars: patch rejects numpy's
        src.patch(patches)
    if plan.stream:
        src.stream(plan.stream, rollover=rollover)


@dataclass
class PageState:
    """What the text panels of one session show, fed by history and batches; ``*_dirty`` flags say which
    panel to render again."""

    pair: str
    quotes: dict[str, Quote] = field(default_factory=dict)
    trades: dict[str, LastTrade] = field(default_factory=dict)
    depth: dict[str, m.DepthSnapshot] = field(default_factory=dict)
    adf_agent: m.AdfResult | None = None
    adf_manual: ManualAdf | None = None
    adf_error: str = ""
    alerts: list[m.Alert] = field(default_factory=list)
    history_note: str = ""  # why there is no history, if there is none
    last_signal: dict[str, Any] | None = None  # the pair's newest PairSignal (plain values, NaN -> None)
    imported: dict[tuple[str, str], tb.Cols] = field(default_factory=dict)  # this session's uploads
    board_dirty: bool = True
    cards_dirty: bool = True
    depth_dirty: bool = False
    marks_dirty: bool = True  # the alert markers on the z-score chart

    def set_pair(self, pair: str) -> None:
        """Another pair: its ADF results, alerts and signals come with its history."""
        self.pair, self.adf_agent, self.adf_manual, self.alerts = pair, None, None, []
        self.last_signal, self.marks_dirty, self.cards_dirty = None, True, True

    def signal(self, rows: tb.Cols) -> None:
        """The pair's signal rows (sorted by time): the newest one is what the cards show."""
        last = latest_signal(rows)
        if last is not None and (self.last_signal is None or last["time"] >= self.last_signal["time"]):
            self.last_signal = last
            self.cards_dirty = True

    def quote(self, sym: str, book: tb.Cols) -> None:
        if tb.length(book):
            self.quotes[sym] = last_quote(book)
            self.board_dirty = True

    def trade(self, sym: str, trades: tb.Cols) -> None:
        if tb.length(trades):
            self.trades[sym] = last_trade(trades)
            self.board_dirty = True

    def agent_adf(self, pair: str, adf: m.AdfResult) -> None:
        """A periodic ADF result: kept when it is of this pair and not older than the one shown."""
        if pair == self.pair and (self.adf_agent is None or adf.time >= self.adf_agent.time):
            self.adf_agent = adf
            self.cards_dirty = True

    def history(self, adfs: Sequence[m.AdfResult | None], alerts: list[m.Alert], live: Sequence[AlertEvent]) -> None:
        """Seed from history and the hub snapshot: the newest of the ADF results ``adfs`` (history's, the
        snapshot's), and the alerts of both (a live alert already in history counted once), the last
        :data:`ALERTS_KEPT`."""
        known = [a for a in adfs if a is not None]
        if known:
            self.adf_agent = max(known, key=lambda a: a.time)
        seen = {(a.time, a.kind) for a in alerts}
        fresh = [e.alert for e in live if (e.alert.time, e.alert.kind) not in seen and e.alert.pair == self.pair]
        self.alerts = (alerts + fresh)[-ALERTS_KEPT:]
        self.cards_dirty = self.marks_dirty = True

    def alert(self, a: m.Alert) -> bool:
        """A batch's alert: added (True) unless it is of another pair or already shown (read again after
        a reconnect)."""
        if a.pair != self.pair or any((x.time, x.kind) == (a.time, a.kind) for x in self.alerts):
            return False
        self.alerts = (self.alerts + [a])[-ALERTS_KEPT:]
        self.cards_dirty = self.marks_dirty = True
        return True
