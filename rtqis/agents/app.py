"""The Faust app: configured for the broker it runs on, with every agent registered.

Dataflow (the whole pipeline in one place)::

    ticks.trade (TradeFrame) --last_trade agent--> table last_trade --> analytics.ticker (Ticker)
                                   \\--> deadletter (DeadLetter: undecodable frames, invalid rows)

Settings that matter on the embedded broker (measured, see bench/README.md):
- table recovery reads each changelog to its true end, probed with a fetch, when the broker's end
  offsets fail the self-check at start (``RTQIS_RECOVERY_FIX``);
- consumer fetch wait = ``RTQIS_FETCH_MAX_WAIT_MS`` (Faust hard-codes 1,500 ms; the broker holds each
  fetch that long even when data is there).
- rebalance/session timeouts of a few seconds (the group join waits for the rebalance timeout).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from typing import Any

import faust
import numpy as np

from rtqis.agents.patches import apply_patches
from rtqis.analytics.candles import CandleState, interval_ms, to_rows
from rtqis.analytics.pair_model import PairModel, PairParams
from rtqis.analytics.sampling import LegSampler, PairAligner
from rtqis.errors import DecodeError
from rtqis.kafka.clients import MessageProducer
from rtqis.kafka.offsets import broker_capabilities
from rtqis.schemas import models as m
from rtqis.schemas.codec import decode as decode_message
from rtqis.schemas.codec import encode
from rtqis.schemas.frames import Frame, validate_book_frame, validate_trade_frame
from rtqis.settings import Settings
from rtqis.topics import ADF, ADF_REQUESTS, ALERTS, BOOK, CANDLES_1M, CANDLES_5M, DEADLETTER, LEGS, PAIR, TICKER, TRADES
from rtqis.topics.registry import TopicSpec, app_id

__all__ = ["RtqisApp", "create_app", "make_worker"]

CANDLE_TOPICS = {"1m": CANDLES_1M, "5m": CANDLES_5M}
LOCAL_LEG = "local_leg"  # a leg sample for a pair computed in the same agent (never published)

log = logging.getLogger(__name__)


def _credentials(settings: Settings) -> Any:
    if settings.security_protocol == "PLAINTEXT":
        return None
    ctx = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            ctx.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    if settings.security_protocol.startswith("SASL"):
        pw = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        return faust.SASLCredentials(
            username=settings.sasl_username, password=pw, ssl_context=ctx, mechanism=settings.sasl_mechanism
        )
    return ctx


class RtqisApp(faust.App):
    """faust.App with the RT-QIS settings object and counters attached."""

    rtqis: Settings
    dead_letters: int
    recovery_fix: str
    pause: asyncio.Event  # set on SIGTERM/SIGINT: agents stop before their next event
    parked: asyncio.Event
    busy: int  # agents in the middle of an event
    outputs: MessageProducer | None  # see _outputs


def create_app(settings: Settings, *, exact_end_offsets: bool | None = None) -> RtqisApp:
    """The Faust app for ``settings`` with all agents registered.

    ``exact_end_offsets`` skips the broker self-check when the caller already knows the answer.
    """
    fix = settings.recovery_fix
    if fix == "auto":
        if exact_end_offsets is None:
            exact_end_offsets = broker_capabilities(settings).exact_end_offsets
        fix = "off" if exact_end_offsets else "end-offsets"
    apply_patches(settings, fix)
    ns = settings.namespace
    conf: dict[str, Any] = {
        "broker": f"kafka://{settings.bootstrap.replace(',', ';kafka://')}",
        "store": "memory://",
        "topic_partitions": settings.partitions,
        "topic_allow_declare": True,
        # the group join waits for the rebalance timeout: keep it short (measured ~4.5 s to Ready)
        "broker_rebalance_timeout": 5.0,
        "broker_session_timeout": 5.0,
        "broker_heartbeat_interval": 1.0,
        "broker_commit_interval": 1.0,
        "web_port": settings.worker_web_port,
        "web_bind": "127.0.0.1",
        "web_enabled": False,
        "producer_compression_type": None if settings.compression == "none" else settings.compression,
        "producer_linger_ms": settings.producer_linger_ms,
        "consumer_auto_offset_reset": "earliest",
        "table_cleanup_interval": 30.0,
        # events queued per agent (Faust: 4,096). A queued frame holds its decoded message (~34 KB for
        # 500 trades): with the pairs in the trades agent its queue fills in a replay, worker RSS after
        # 1 M ticks 313 - 325 MB; 512: 265 - 281 MB, the same throughput (bench/README.md)
        "stream_buffer_maxsize": 512,
    }
    if fix == "batch1":
        # every changelog record its own batch: the broker's "base offset of the last batch + 1" is
        # then exact (costs a round trip per table write and ~1.8 KB of broker memory per record)
        conf["producer_max_batch_size"] = 1
    creds = _credentials(settings)
    if creds is not None:
        conf["broker_credentials"] = creds
    app = RtqisApp(app_id(ns), **conf)
    app.rtqis = settings
    app.dead_letters = 0
    app.pause = asyncio.Event()
    app.parked = asyncio.Event()
    app.busy = 0
    app.recovery_fix = fix
    app.outputs = None

    @app.timer(0.05)
    async def serve_delivery_reports() -> None:
        """Delivery reports of the outputs when no event comes to trigger them."""
        if app.outputs is not None:
            app.outputs.poll()

    log.info("recovery fix: %s; fetch wait %d ms", fix, settings.fetch_max_wait_ms)
    _register(app, settings)
    return app


def _outputs(app: RtqisApp) -> MessageProducer:
    """The producer of the agents' outputs (candles, tickers, signals, alerts, ADF results, legs), made
    on first use: confluent-kafka, not Faust's ``topic.send``, which costs ~100 us of Python a message
    (channel, future, aiokafka's batch builder and sender) against a few for ``produce``; a 1-pair replay
    publishes ~20,000 signals per million ticks (bench/README.md). The table changelogs stay Faust's.
    What must not be lost sits in an outbox in the table state until its delivery report (served after
    each send and on a timer), so a crash loses nothing. Keys go to the same partitions as with Faust
    (``murmur2_random``, the Java and aiokafka partitioner)."""
    if app.outputs is None:
        app.outputs = MessageProducer(app.rtqis, partitioner="murmur2_random")
    return app.outputs


def _register(app: RtqisApp, settings: Settings) -> None:
    ns = settings.namespace
    trades = app.topic(TRADES.full_name(ns), value_serializer="raw", key_serializer="raw")
    deadletter = app.topic(DEADLETTER.full_name(ns), value_serializer="raw", key_serializer="raw")
    last_trade = app.Table("last_trade", default=dict, partitions=settings.partitions)
    codec = settings.codec

    async def dead_letter(event: Any, reason: str, payload: bytes, stage: str) -> None:
        app.dead_letters += 1
        msg = event.message
        key = msg.key.decode("utf-8", "replace") if isinstance(msg.key, bytes) else msg.key
        dl = m.DeadLetter(
            time=int(time.time() * 1000),
            stage=stage,
            reason=reason,
            source_topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=key,
            payload=payload,
        )
        value, headers = encode(dl, codec)
        await deadletter.send(key=stage.encode(), value=value, headers=headers)
        log.warning(
            "dead-lettered %s[%s]@%s: %s (total %d)", msg.topic, msg.partition, msg.offset, reason, app.dead_letters
        )

    candle_table = app.Table("candles", default=dict, partitions=settings.partitions)
    candle_topics = {iv: spec for iv, spec in CANDLE_TOPICS.items() if iv in settings.candle_intervals}
    legs_topic = app.topic(LEGS.full_name(ns), value_serializer="raw", key_serializer="raw")
    # one partition: the tick agent feeds its leg samples straight to the pairs, whose state it keeps in
    # its own table (so one event's writes stay in one changelog partition, in order): no pairs.legs hop
    colocated = settings.pairs_colocated
    candles = _SymbolBook(settings, candles=True, sample=settings.pair_price == "trade", colocated=colocated)
    local_pairs = _PairBook(settings)

    async def publish(topic: TopicSpec, model: m.Message, key: str, on_delivered: Any = None) -> None:
        _outputs(app).send(topic, model, key=key, on_delivered=on_delivered)

    send_pair = _pair_sender(publish)

    def apply_local_legs(out: list[tuple[str, dict[str, Any], bool]], table: Any) -> list[tuple[str, Any]]:
        """Leg samples of a frame applied to their (co-located) pairs: (pair, outputs to send), in order."""
        return [
            (row["pair"], local_pairs.apply(m.LegSamples(**row), table)) for kind, row, _ in out if kind == LOCAL_LEG
        ]

    async def send_outputs(
        book: _SymbolBook, sym: str, out: list[tuple[str, dict[str, Any], bool]], pair_out: list[tuple[str, Any]]
    ) -> None:
        for kind, row, final in out:
            if kind == LOCAL_LEG:  # applied to its pair already (apply_local_legs)
                continue
            cb = (lambda k=_outbox_key(row): book.delivered.add(k)) if final else None
            if kind == "leg":
                await publish(LEGS, m.LegSamples(**row), row["pair"], on_delivered=cb)
            else:
                await publish(candle_topics[kind], m.Candle(**row), sym, on_delivered=cb)
        for pair, rows in pair_out:
            await send_pair(local_pairs, rows, pair)

    @app.agent(trades, name="trades")
    async def trades_agent(stream: Any) -> None:
        """Every trade frame, decoded and validated once, then:
        - ``last_trade`` table -> ``analytics.ticker`` (last trade and counts per symbol);
        - ``candles`` table -> ``candles.1m`` / ``candles.5m`` (closed once, corrections, live <= 4/s).
        Idempotent: trade ids already applied are skipped, so a frame redelivered after a crash changes
        nothing. Closed candles are delivered before the table records them (at-least-once publish;
        consumers upsert by (symbol, interval, open_time))."""
        await _guarded(app, stream, _process)

    async def valid_frame(event: Any, spec: TopicSpec, validate: Any, stage: str) -> Frame | None:
        """The event's tick frame without its invalid rows (dead-lettered with the reasons); None if
        nothing valid is left."""
        try:
            frame = decode_message(event.value, event.headers, spec.value_schema)
            if not isinstance(frame, Frame):
                raise DecodeError(f"expected a {spec.value_schema}, got {type(frame).__name__}")
        except DecodeError as e:
            await dead_letter(event, str(e), event.value or b"", stage)
            return None
        good, bad = validate(frame)
        if bad:
            reasons = "; ".join(f"row {i}: {r}" for i, r in bad[:10])
            await dead_letter(event, f"{len(bad)} invalid rows: {reasons}", event.value, stage)
            frame = frame.take(good)
        return frame if len(frame) else None

    async def _process(event: Any) -> None:
        frame = await valid_frame(event, TRADES, validate_trade_frame, "worker.trades")
        if frame is None:
            return
        sym = frame.symbol
        # Every table write of a frame happens before the first await, so a stop or crash never
        # leaves a frame half applied. Closed candles go through an outbox kept in the table:
        # re-published after a restart until delivery is seen, so they are never lost.
        c = frame.cols
        out, new_state = candles.update(sym, candle_table[sym], c, (c["trade_time"], c["price"], c["trade_id"]))
        # the pairs' writes go before the symbol's: a crash between them redelivers the frame, and the
        # pair aligner skips the samples it already has
        pair_out = apply_local_legs(out, candle_table)
        if new_state is not None:
            candle_table[sym] = new_state
        state = last_trade[sym]
        ids = frame.cols["trade_id"]
        assert ids is not None
        fresh = ids > state.get("trade_id", -1)
        n = int(fresh.sum())
        if n == 0:
            await send_outputs(candles, sym, out, pair_out)
            return
        i = int(np.flatnonzero(fresh)[-1])
        new = {
            "trade_id": int(ids[i]),
            "price": float(frame.cols["price"][i]),  # type: ignore[index]
            "event_time": int(frame.cols["event_time"][i]),  # type: ignore[index]
            "trades": state.get("trades", 0) + n,
            "frames": state.get("frames", 0) + 1,
        }
        last_trade[sym] = new
        await send_outputs(candles, sym, out, pair_out)
        await publish(TICKER, m.Ticker(symbol=sym, **new), sym)

    if settings.pair_price == "mid":
        book = app.topic(BOOK.full_name(ns), value_serializer="raw", key_serializer="raw")
        book_table = app.Table("book_legs", default=dict, partitions=settings.partitions)
        mids = _SymbolBook(settings, candles=False, sample=True, colocated=colocated)

        @app.agent(book, name="book")
        async def book_agent(stream: Any) -> None:
            """Best bid/ask frames -> mid-price leg samples for the pairs (``RTQIS_PAIR_PRICE=mid``)."""
            await _guarded(app, stream, _process_book)

        async def _process_book(event: Any) -> None:
            frame = await valid_frame(event, BOOK, validate_book_frame, "worker.book")
            if frame is None:
                return
            c = frame.cols
            t = c["event_time"] if c.get("event_time") is not None else c["recv_time"]  # spot: no event time
            mid = (c["bid_price"] + c["ask_price"]) / 2.0  # type: ignore[operator]
            out, new_state = mids.update(frame.symbol, book_table[frame.symbol], c, (t, mid, c["update_id"]))
            pair_out = apply_local_legs(out, book_table)
            if new_state is not None:
                book_table[frame.symbol] = new_state
            await send_outputs(mids, frame.symbol, out, pair_out)

    local = (local_pairs, book_table if settings.pair_price == "mid" else candle_table) if colocated else None
    _register_pairs(app, settings, legs_topic, send_pair, dead_letter, local)


async def _guarded(app: RtqisApp, stream: Any, handle: Any) -> None:
    """Run ``handle(event)`` for every event; on stop, park before the next event (crash-only stop)."""
    async for event in stream.events():
        if app.pause.is_set():  # stopping: leave this event unprocessed and unacknowledged
            app.parked.set()
            await asyncio.Event().wait()
        app.busy += 1
        try:
            await handle(event)
        finally:
            app.busy -= 1


def _pair_sender(publish: Any) -> Any:
    """``send(book, outputs, pair)``: publish what :meth:`_PairBook.apply` returned, marking deliveries."""
    out_topics = {spec.name: spec for spec in (PAIR, ALERTS, ADF)}
    models = {PAIR.name: m.PairSignal, ALERTS.name: m.Alert, ADF.name: m.AdfResult}

    async def send(book: _PairBook, book_out: list[tuple[str, dict[str, Any], str | None]], pair: str) -> None:
        for kind, row, key in book_out:
            cb = (lambda k=key: book.delivered.add(k)) if key is not None else None
            await publish(out_topics[kind], models[kind](**row), pair, on_delivered=cb)

    return send


def _register_pairs(
    app: RtqisApp,
    settings: Settings,
    legs_topic: Any,
    send: Any,
    dead_letter: Any,
    colocated: tuple[_PairBook, Any] | None,
) -> None:
    """The pair agent: leg samples -> aligned samples -> PairSignal / Alert / AdfResult; ADF on request.
    ``colocated``: the tick agent's pair book and table, where the pairs live when it computes them."""
    # The Huber and ADF kernels import scikit-learn and statsmodels lazily (~1.3 s). Import them now, at
    # start, not in the first refit: that stalled the event loop ~0.9 s mid-stream (latency p99 0.65 s).
    # (With them imported, the first ADF test takes 1 ms: nothing else to warm up.)
    import sklearn.linear_model  # noqa: F401
    import statsmodels.tsa.stattools  # noqa: F401

    ns = settings.namespace
    requests = app.topic(ADF_REQUESTS.full_name(ns), value_serializer="raw", key_serializer="raw")
    # one table for the state and the sample-history chunks: all writes of an event go to one changelog
    # partition, in order, so a crash keeps a prefix of them (chunks are written before the state)
    state_table = app.Table("pair_state", default=dict, partitions=settings.partitions)
    pairs = _PairBook(settings)

    @app.agent(legs_topic, name="pairs")
    async def pairs_agent(stream: Any) -> None:
        """Leg samples of each pair (keyed by pair) -> ``analytics.pair`` every sample, ``alerts`` on
        z-score crossings, ``analytics.adf`` every ``adf_every_s``. State: ``pair_state`` (aligner,
        model scalars, outbox; key = pair) and the sample history in chunks (key = pair|chunk)."""
        await _guarded(app, stream, _process_legs)

    async def pair_message(event: Any, spec: TopicSpec, model: type[m.Message], stage: str) -> Any:
        """The event decoded as ``model`` for a configured pair, or None (dead-lettered with the reason)."""
        try:
            msg = decode_message(event.value, event.headers, spec.value_schema)
            if not isinstance(msg, model):
                raise DecodeError(f"expected {spec.value_schema}, got {type(msg).__name__}")
            if msg.pair not in pairs.pairs:  # type: ignore[attr-defined]
                raise DecodeError(f"unknown pair {msg.pair!r} (configured: {', '.join(pairs.pairs)})")  # type: ignore[attr-defined]
        except DecodeError as e:
            await dead_letter(event, str(e), event.value or b"", stage)
            return None
        return msg

    async def _process_legs(event: Any) -> None:
        msg = await pair_message(event, LEGS, m.LegSamples, "worker.pairs")
        if msg is None:
            return
        # every table write before the first await (see the trades agent)
        out = pairs.apply(msg, state_table)
        await send(pairs, out, msg.pair)

    @app.agent(requests, name="adf_requests")
    async def adf_requests_agent(stream: Any) -> None:
        """On-demand ADF: an AdfRequest -> an AdfResult with its request_id on ``analytics.adf``."""
        await _guarded(app, stream, _process_request)

    async def _process_request(event: Any) -> None:
        req = await pair_message(event, ADF_REQUESTS, m.AdfRequest, "worker.adf_request")
        if req is None:
            return
        book, table = colocated or (pairs, state_table)
        _, model = book.load(req.pair, table)
        res = model.adf(req.window, req.regression) if model is not None else None
        if res is None:
            log.info("ADF request %s for %s: not enough samples yet", req.request_id, req.pair)
            return
        await send(book, [(ADF.name, {**res, "request_id": req.request_id}, None)], req.pair)


def _pair_out_key(kind: str, row: dict[str, Any]) -> str:
    """Identity of one pair output in the (shared) book: its topic, pair, sample time and alert kind."""
    return f"{kind}|{row['pair']}|{row['time']}|{row.get('kind', '')}"


class _PairBook:
    """Per-pair aligner and :class:`PairModel`, cached in memory and checked against the tables by a
    sequence number; outputs go through an outbox kept in the state (as candles do), so a crash between
    the table write and the delivery loses nothing (consumers upsert by (pair, time))."""

    CHUNK = 60  # samples per pair_window entry

    def __init__(self, settings: Settings) -> None:
        self.pairs = list(settings.pairs)
        self.params = PairParams.from_settings(settings)
        self.max_pending = max(1, int(settings.align_wait_s * 1000 // settings.sample_ms))
        self.cache: dict[str, tuple[int, PairAligner, PairModel]] = {}
        self.delivered: set[str] = set()
        self.sent: set[str] = set()

    def load(self, pair: str, table: Any) -> tuple[int, PairModel | None]:
        stored = table[pair]
        seq = int(stored.get("seq", 0))
        cached = self.cache.get(pair)
        if cached is not None and cached[0] == seq:
            return seq, cached[2]
        if not stored:
            return 0, None
        n = int(stored["model"]["n"])
        keep = min(n, self.params.history)
        rows: list[Any] = []
        for c in range((n - keep) // self.CHUNK, (n - 1) // self.CHUNK + 1 if n else 0):
            rows.extend(table[f"{pair}|{c}"].get("rows", []))
        first = n - keep
        lo = (n - keep) // self.CHUNK * self.CHUNK
        rows = rows[first - lo : n - lo]  # a chunk may hold rows of a later event whose state was lost
        model = PairModel.from_state(pair, self.params, stored["model"], rows)
        aligner = PairAligner.from_state(stored["aligner"])
        self.cache[pair] = (seq, aligner, model)
        return seq, model

    def apply(self, msg: m.LegSamples, table: Any) -> list[tuple[str, dict[str, Any], str | None]]:
        """Apply one message of leg samples: (kind, row, outbox key or None) to publish, in order."""
        pair = msg.pair
        seq, model = self.load(pair, table)
        stored = table[pair]
        if model is None:
            aligner, model = PairAligner(max_pending=self.max_pending), PairModel(pair, self.params)
        else:
            aligner = self.cache[pair][1]
        out: list[tuple[str, dict[str, Any], str | None]] = []
        # outbox entries are [kind, row, key] (states written before the key was stored: [kind, row])
        stored_box = [(e[0], e[1], e[2] if len(e) > 2 else _pair_out_key(e[0], e[1])) for e in stored.get("outbox", [])]
        outbox = [[kind, row, key] for kind, row, key in stored_box if key not in self.delivered]
        for kind, row, key in outbox:  # restored from the changelog and never sent by this process: send again
            if key not in self.sent:
                self.sent.add(key)
                out.append((kind, row, key))
        if not aligner.push(msg.leg, msg.time, msg.price, msg.last_time) and len(outbox) == len(stored_box):
            return out  # a redelivered message: nothing new
        n_before = model.n
        rows = aligner.drain()
        for t, x, y, xt, yt in zip(
            rows.time.tolist(),
            rows.x.tolist(),
            rows.y.tolist(),
            rows.x_time.tolist(),
            rows.y_time.tolist(),
            strict=True,
        ):
            st = model.step(t, x, y, xt, yt)
            if st is None:
                continue
            new = [(PAIR.name, st.signal)]
            for kind, threshold in st.alerts:
                new.append((ALERTS.name, _alert_row(st.signal, kind, threshold)))
            if st.adf_due and (res := model.adf()) is not None:
                new.append((ADF.name, res))
            for kind, row in new:
                key = _pair_out_key(kind, row)
                self.sent.add(key)
                outbox.append([kind, row, key])
                out.append((kind, row, key))
        # the sample history in chunks: rewrite the chunks that got rows (before the state: see above)
        dropped = int(stored.get("dropped", 0))  # chunks below this are deleted
        if model.n > n_before:
            hist = list(model.hist)
            base = model.n - len(hist)  # index of hist[0]
            for c in range(n_before // self.CHUNK, (model.n - 1) // self.CHUNK + 1):
                lo, hi = max(c * self.CHUNK, base), (c + 1) * self.CHUNK
                chunk_rows = [list(r) for r in hist[lo - base : hi - base]]
                if lo > c * self.CHUNK:  # the chunk starts before the history held: keep its head
                    chunk_rows = table[f"{pair}|{c}"].get("rows", [])[: lo - c * self.CHUNK] + chunk_rows
                table[f"{pair}|{c}"] = {"rows": chunk_rows}
            # drop only chunks that the *previous* state no longer needs: if this event's state is lost
            # in a crash, the previous one (written earlier to the same partition) must still load
            needed_before = (n_before - min(n_before, self.params.history)) // self.CHUNK
            for c in range(dropped, needed_before):
                table.pop(f"{pair}|{c}", None)
            dropped = max(dropped, needed_before)
        seq += 1
        self.cache[pair] = (seq, aligner, model)
        gone = [key for _, _, key in stored_box if key in self.delivered]  # delivered: leave the outbox
        self.delivered.difference_update(gone)
        self.sent.difference_update(gone)  # (without this, ``sent`` grew by every output for good)
        table[pair] = {
            "seq": seq,
            "aligner": aligner.state(),
            "model": model.state(),
            "outbox": outbox,
            "dropped": dropped,
        }
        return out


def _alert_row(sig: dict[str, Any], kind: str, threshold: float) -> dict[str, Any]:
    z, beta = sig["zscore"], sig["kalman_beta"]
    what = {
        "enter_short_spread": "spread rich: short y, long beta*x",
        "enter_long_spread": "spread cheap: long y, short beta*x",
        "exit": "spread back to normal: exit",
    }[kind]
    return {
        "time": sig["time"],
        "pair": sig["pair"],
        "kind": kind,
        "zscore": z,
        "threshold": threshold,
        "spread": sig["spread"],
        "beta": beta,
        "x": sig["x"],
        "y": sig["y"],
        "message": f"{sig['pair']} z={z:+.2f} crossed {threshold:+.2f}: {what} (beta {beta:.5g})",
    }


def _outbox_key(row: dict[str, Any]) -> str:
    """Identity of one outbox row: a version of a closed candle (corrections are versions too) or a
    message of leg samples."""
    if "leg" in row:
        return f"leg|{row['pair']}|{row['leg']}|{row['time'][0]}|{row['time'][-1]}"
    return f"{row['symbol']}|{row['interval']}|{row['open_time']}|{row['trades']}|{row['correction']}"


def pair_legs(settings: Settings) -> dict[str, list[tuple[str, str]]]:
    """symbol -> [(pair, "x" | "y"), ...] for every configured pair ``Y/X``."""
    out: dict[str, list[tuple[str, str]]] = {}
    for pair in settings.pairs:
        y, x = pair.split("/")
        out.setdefault(y, []).append((pair, "y"))
        out.setdefault(x, []).append((pair, "x"))
    return out


class _SymbolBook:
    """Per-symbol state of the tick agents: candle states and the pair-leg sampler, cached in memory and
    checked against the table by a sequence number (the table, restored from its changelog, is the
    truth after a restart or a rebalance).

    What must reach a topic - closed candles, corrections, leg samples - also enters an *outbox* stored
    with the state. An outbox row leaves only once this process has seen its delivery; rows restored
    from the changelog that this process never sent are sent again (consumers upsert or deduplicate,
    so a repeat is harmless; a loss is impossible)."""

    def __init__(self, settings: Settings, *, candles: bool, sample: bool, colocated: bool = False) -> None:
        self.colocated = colocated  # leg samples go straight to the pairs (LOCAL_LEG rows, no outbox)
        self.intervals = [(iv, interval_ms(iv)) for iv in settings.candle_intervals] if candles else []
        self.legs = pair_legs(settings) if sample else {}
        self.step_ms = settings.sample_ms
        self.max_fill = max(1, int(settings.stale_after_s * 1000 // settings.sample_ms) + 1)
        self.grace_ms = settings.candle_grace_ms
        self.live_s = settings.live_candle_ms / 1000.0
        self.cache: dict[str, tuple[int, dict[str, CandleState], LegSampler | None]] = {}
        self.last_live: dict[tuple[str, str], float] = {}
        self.delivered: set[str] = set()  # outbox keys whose delivery this process saw
        self.sent: set[str] = set()  # outbox keys this process has sent

    def _states(self, sym: str, stored: dict[str, Any]) -> tuple[int, dict[str, CandleState], LegSampler | None]:
        seq = int(stored.get("seq", 0))
        cached = self.cache.get(sym)
        if cached is not None and cached[0] == seq:
            return cached
        states = {
            iv: CandleState.from_dict(stored["state"][iv])
            if iv in stored.get("state", {})
            else CandleState(size, grace_ms=self.grace_ms)
            for iv, size in self.intervals
        }
        sampler = None
        if sym in self.legs:
            sampler = (
                LegSampler.from_state(stored["sampler"])
                if "sampler" in stored
                else LegSampler(step_ms=self.step_ms, max_fill=self.max_fill)
            )
        return seq, states, sampler

    def update(
        self, sym: str, stored: dict[str, Any], cols: dict[str, Any], sample_cols: tuple[Any, Any, Any] | None
    ) -> tuple[list[tuple[str, dict[str, Any], bool]], dict[str, Any] | None]:
        """Apply a frame: (rows to publish as (topic kind, row, wait for delivery), new table value or None).

        ``cols`` are trade columns for the candles; ``sample_cols`` = (times, prices, ids) for the sampler.
        """
        seq, states, sampler = self._states(sym, stored)
        out: list[tuple[str, dict[str, Any], bool]] = []
        outbox: list[dict[str, Any]] = [r for r in stored.get("outbox", []) if _outbox_key(r) not in self.delivered]
        changed = len(outbox) != len(stored.get("outbox", []))
        for r in outbox:  # restored from the changelog and never sent by this process: send again
            if _outbox_key(r) not in self.sent:
                self.sent.add(_outbox_key(r))
                out.append((_kind(r), r, True))

        def final(kind: str, row: dict[str, Any]) -> None:
            self.sent.add(_outbox_key(row))
            outbox.append(row)
            out.append((kind, row, True))

        now = time.monotonic()
        for iv, _ in self.intervals:
            upd = states[iv].update(
                cols["trade_time"], cols["price"], cols["qty"], cols["buyer_maker"], cols["trade_id"]
            )
            if upd.applied == 0 and not len(upd.closed) and not len(upd.corrections):
                continue
            changed = True
            for row in to_rows(upd.closed, sym, iv, closed_before_ms=upd.closed_until) + to_rows(
                upd.corrections, sym, iv, closed_before_ms=upd.closed_until, correction=True
            ):
                final(iv, row)
            if len(upd.live) and now - self.last_live.get((sym, iv), 0.0) >= self.live_s:
                self.last_live[(sym, iv)] = now
                out.extend((iv, row, False) for row in to_rows(upd.live, sym, iv))
        if sampler is not None and sample_cols is not None:
            before = sampler.state()
            t, p, lt = sampler.update(*sample_cols)
            changed = changed or sampler.state() != before
            if len(t):
                for pair, leg in self.legs[sym]:
                    row = {"pair": pair, "leg": leg, "symbol": sym, "time": t.tolist(), "price": p.tolist()}
                    row["last_time"] = lt.tolist()
                    if self.colocated:
                        out.append((LOCAL_LEG, row, False))
                    else:
                        final("leg", row)
        if not changed:
            return out, None
        seq += 1
        self.cache[sym] = (seq, states, sampler)
        gone = [_outbox_key(r) for r in stored.get("outbox", []) if r not in outbox]  # delivered
        self.delivered.difference_update(gone)
        self.sent.difference_update(gone)  # (without this, ``sent`` grew by every output for good)
        new = {"seq": seq, "state": {iv: st.to_dict() for iv, st in states.items()}, "outbox": outbox}
        if sampler is not None:
            new["sampler"] = sampler.state()
        return out, new


def _kind(row: dict[str, Any]) -> str:
    return "leg" if "leg" in row else str(row["interval"])


def make_worker(app: RtqisApp, loglevel: str) -> Any:
    """A Faust worker whose SIGTERM/SIGINT stop at a frame boundary, flush, and exit without a final
    offset commit.

    Faust's own shutdown stops the tables and flushes the producer *before* it stops the agents, and a
    final commit at stop (ours or Faust's) was seen to run ahead of the table changelog: a table came
    back short after SIGTERM in about 1 run of 3, never after SIGKILL. So a stop here is crash-only:
    the agents park before their next event, the producer is flushed (changelogs and outputs
    durable), and the process exits. The next worker resumes from the last periodic commit (made
    after a full flush) and skips the frames it already applied (idempotent by trade id).
    """
    from faust.worker import Worker

    class SafeStopWorker(Worker):  # type: ignore[misc]
        _rtqis_stopping = False

        def _schedule_shutdown(self, signal: Any) -> None:
            if self._rtqis_stopping:
                return
            self._rtqis_stopping = True
            app.pause.set()
            asyncio.ensure_future(self._safe_stop(signal), loop=self.loop)

        async def _safe_stop(self, signal: Any) -> None:
            code = 0
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10.0
                while app.busy and loop.time() < deadline:
                    await asyncio.sleep(0.005)
                await app.producer.flush()
                left = app.outputs.flush(10.0) if app.outputs is not None else 0
                if left:
                    log.warning("%d output messages undelivered at stop (outbox rows are sent again)", left)
                log.info("stopped on %s at a frame boundary; outputs flushed", getattr(signal, "name", signal))
            except Exception:  # noqa: BLE001 - never hang on stop; the next worker reprocesses
                log.exception("clean stop failed; exiting without committing")
                code = 1
            for h in logging.getLogger().handlers:
                h.flush()
            os._exit(code)

    return SafeStopWorker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
