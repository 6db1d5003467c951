"""The worker graph: every topic, table and agent of the Faust app, wired in one function, :func:`create_app`.

What each agent does with an event is in :mod:`rtqis.agents.handlers` (logic in the pure books of
:mod:`rtqis.agents.books`); the configuration is in :mod:`rtqis.agents.config`, the Faust patches in
:mod:`rtqis.agents.patches`, the process (crash-only stop) in :mod:`rtqis.agents.worker`.
"""

from __future__ import annotations

import logging
from typing import Any

from rtqis.agents.books import PairBook, SymbolBook
from rtqis.agents.config import app_config, faust_datadir, processing_guarantee, recovery_fix
from rtqis.agents.handlers import BookHandler, LegsHandler, TradesHandler
from rtqis.agents.outputs import Outputs
from rtqis.agents.patches import apply_patches
from rtqis.agents.watchdog import StallWatch, check_stalls
from rtqis.agents.worker import BackPressureLog, RtqisApp, make_worker, progress_line, run_events
from rtqis.kafka.groups import group_session_s
from rtqis.settings import Settings
from rtqis.topics import BOOK, DEADLETTER, LEGS, TRADES, TopicSpec
from rtqis.topics.registry import app_id

__all__ = ["RtqisApp", "create_app", "make_worker"]

log = logging.getLogger(__name__)

#: the worker logs what it handled per input partition this often (s): a stalled partition shows as +0
PROGRESS_LOG_S = 30.0
#: how often the worker looks for a stalled input partition (s; rtqis.agents.watchdog)
STALL_CHECK_S = 5.0


def create_app(settings: Settings, *, exact_end_offsets: bool | None = None) -> RtqisApp:
    """The worker's Faust app for ``settings``: every topic, table and agent.

    ``exact_end_offsets`` skips the broker self-check (:func:`~rtqis.agents.config.recovery_fix`) when
    the caller already knows the answer. The graph, ``topic (model) --> [agent] --> table --> topic``::

        ticks.trade (TradeFrame) --> [trades] --+--> last_trade --> analytics.ticker (Ticker)
                                                +--> candles -----> candles.1m, candles.5m (Candle)
                                                '--> leg samples (RTQIS_PAIR_PRICE=trade) --> LEGS

        ticks.book (BookTickerFrame) --> [book] --> book_legs      (only with RTQIS_PAIR_PRICE=mid)
                                                '--> leg samples (mid prices, with bid/ask) --> LEGS

        LEGS, one partition (co-located, the default): the same agent applies them to its pairs, whose
              states it keeps in its own table (candles or book_legs) --> PAIR OUTPUTS
        LEGS, several partitions (or RTQIS_COLOCATE_PAIRS=false):
              --> pairs.legs (LegSamples) --> [pairs] --> pair_state --> PAIR OUTPUTS

        PAIR OUTPUTS = analytics.pair (PairSignal), alerts (Alert), analytics.adf (AdfResult)
        [every agent] --> deadletter (DeadLetter): undecodable messages, invalid rows, unknown pairs
        timer, every 50 ms: delivery reports of the outputs (outbox rows then leave their table)
        timer, every 30 s: a log line of the events handled per input partition (and producer waits)
        timer, every 5 s: an input partition stalled for RTQIS_WORKER_STALL_S is logged and resumed (watchdog.py)

    Tables are Faust tables (in memory, restored from their changelog topics). Every output but the
    ticker, the live candles and the dead letters stays in an outbox in its table until delivered
    (:mod:`rtqis.agents.outbox`). The pairs agent consumes ``pairs.legs`` in both layouts.
    """
    fix = recovery_fix(settings, exact_end_offsets)
    guarantee = processing_guarantee(settings)
    apply_patches(settings, fix)
    faust_datadir(settings).parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    session_s = group_session_s(settings)
    app = RtqisApp(app_id(settings.namespace), **app_config(settings, fix, guarantee, session_s))
    log.info(
        "recovery fix: %s; processing guarantee: %s; fetch wait %d ms; group session %.1f s",
        fix, guarantee, settings.fetch_max_wait_ms, session_s,
    )  # fmt: skip

    def topic(spec: TopicSpec) -> Any:
        """A topic of raw bytes: the agents decode themselves, to dead-letter what does not decode."""
        return app.topic(spec.full_name(settings.namespace), value_serializer="raw", key_serializer="raw")

    def table(name: str) -> Any:
        return app.Table(name, default=dict, partitions=settings.partitions)

    colocated = settings.pairs_colocated
    outputs = Outputs(settings, topic(DEADLETTER))
    app.attach(settings, fix, outputs)
    # with one partition the pairs are computed by the tick agent whose prices they use (trades or book),
    # their state in that agent's table (one event's writes in one changelog partition, in order)
    local_pairs = PairBook(settings, serve=outputs.poll)

    # ticks.trade --> trades --> last_trade, candles (+ co-located pairs)
    trades, last_trade, candles = topic(TRADES), table("last_trade"), table("candles")
    symbols = SymbolBook(settings, candles=True, sample=settings.pair_price == "trade", colocated=colocated)
    on_trades = TradesHandler(outputs, symbols, candles, last_trade, local_pairs)

    @app.agent(trades, name="trades")
    async def trades_agent(stream: Any) -> None:
        """Trade frames -> last_trade -> analytics.ticker; candles -> candles.1m / candles.5m."""
        await run_events(app, stream, on_trades)

    # ticks.book --> book --> book_legs (+ co-located pairs)
    if settings.pair_price == "mid":
        books, book_legs = topic(BOOK), table("book_legs")
        mids = SymbolBook(settings, candles=False, sample=True, colocated=colocated, quotes=True)
        on_books = BookHandler(outputs, mids, book_legs, local_pairs)

        @app.agent(books, name="book")
        async def book_agent(stream: Any) -> None:
            """Best bid/ask frames -> mid-price leg samples for the pairs (``RTQIS_PAIR_PRICE=mid``)."""
            await run_events(app, stream, on_books)

    # pairs.legs --> pairs --> pair_state
    # The Huber and ADF kernels import scikit-learn and statsmodels lazily (~1.2 s). Import them now, at
    # start, not in the first refit: that stalled the event loop ~0.9 s mid-stream (latency p99 0.65 s).
    # Not in a thread during the group join either: under load, a refit then raced that import and got a
    # partially initialised module (AttributeError: polars), which crashed the trades agent twice.
    import sklearn.linear_model  # noqa: F401
    import statsmodels.tsa.stattools  # noqa: F401

    legs, pair_state = topic(LEGS), table("pair_state")
    on_legs = LegsHandler(outputs, PairBook(settings, serve=outputs.poll), pair_state)

    @app.agent(legs, name="pairs")
    async def pairs_agent(stream: Any) -> None:
        """Leg samples (keyed by pair) -> analytics.pair every sample, alerts on z-score crossings,
        analytics.adf every ``adf_every_s``."""
        await run_events(app, stream, on_legs)

    @app.timer(0.05)
    async def serve_delivery_reports() -> None:
        """Delivery reports of the outputs when no event comes to trigger them."""
        outputs.poll()

    logged: dict[tuple[str, int], int] = {}
    inputs = {spec.full_name(settings.namespace) for spec in (TRADES, BOOK, LEGS)}
    stalls = StallWatch(settings.worker_stall_s)

    @app.timer(STALL_CHECK_S)
    async def watch_stalls() -> None:
        """Resume an input partition that has messages waiting and no progress (see
        :mod:`rtqis.agents.watchdog`), and say what the consumer thought of it."""
        try:
            await check_stalls(app, stalls, inputs)
        except Exception as e:  # noqa: BLE001 - a check must never stop the worker (e.g. broker away)
            log.warning("stall check failed: %s: %s", type(e).__name__, e)

    back_pressure = BackPressureLog.install()

    @app.timer(PROGRESS_LOG_S)
    async def log_progress() -> None:
        """What the agents handled, per input partition, every :data:`PROGRESS_LOG_S` seconds (and how
        often they waited for Faust's producer)."""
        line = progress_line(app.progress, logged)
        log.info("handled in %.0f s: %s%s", PROGRESS_LOG_S, line, back_pressure.summary())

    return app
