"""The agents' logic, pure: per-symbol candles and leg samples (:class:`SymbolBook`), per-pair signals
(:class:`PairBook`), both around one :class:`~rtqis.agents.outbox.Outbox`.

A book turns one event (a frame of trades or mids, a message of leg samples) into the new table state
and the rows to publish (:class:`~rtqis.agents.outbox.Output`). It keeps decoded state in memory, checked
against the table by a sequence number: the table, restored from its changelog, is the truth after a
restart or a rebalance. No Faust, no Kafka: a table is any ``MutableMapping[str, dict]`` whose missing
keys read as ``{}`` (a Faust ``Table(default=dict)``, or ``collections.defaultdict(dict)`` in tests).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import numpy as np

from rtqis.agents.outbox import Outbox, Output
from rtqis.agents.quotes import LegQuotes
from rtqis.analytics.candles import CandleState, to_rows
from rtqis.analytics.pair_model import PairModel, PairParams
from rtqis.analytics.sampling import LegSampler, PairAligner
from rtqis.intervals import interval_ms
from rtqis.schemas import models as m
from rtqis.schemas.frames import unknown_symbol_reason
from rtqis.schemas.plausibility import implausible_rows
from rtqis.settings import Settings
from rtqis.topics import ADF, ALERTS, PAIR

__all__ = [
    "LOCAL_LEG",
    "PairBook",
    "StateTable",
    "SymbolBook",
    "candle_output_key",
    "pair_legs",
    "pair_output_key",
]

#: Output kind of a leg sample for a pair computed by the same agent (applied there, never published).
LOCAL_LEG = "local_leg"

StateTable = MutableMapping[str, Any]
"""A table of states: key -> dict, a missing key reads as ``{}``."""


def candle_output_key(row: dict[str, Any]) -> str:
    """Outbox identity of a symbol book's row: a version of a closed candle (corrections are versions
    too: the trade count tells them apart) or a message of leg samples (pair, leg, first and last time)."""
    if "leg" in row:
        return f"leg|{row['pair']}|{row['leg']}|{row['time'][0]}|{row['time'][-1]}"
    return f"{row['symbol']}|{row['interval']}|{row['open_time']}|{row['trades']}|{row['correction']}"


def pair_output_key(kind: str, row: dict[str, Any]) -> str:
    """Outbox identity of a pair book's output: its topic, pair, sample time and alert kind."""
    return f"{kind}|{row['pair']}|{row['time']}|{row.get('kind', '')}"


def pair_legs(settings: Settings) -> dict[str, list[tuple[str, str]]]:
    """symbol -> [(pair, "x" | "y"), ...] for every configured pair ``Y/X``."""
    out: dict[str, list[tuple[str, str]]] = {}
    for pair in settings.pairs:
        y, x = pair.split("/")
        out.setdefault(y, []).append((pair, "y"))
        out.setdefault(x, []).append((pair, "x"))
    return out


def _symbol_kind(row: dict[str, Any]) -> str:
    return "leg" if "leg" in row else str(row["interval"])


class SymbolBook:
    """Per-symbol state of a tick agent: the candle states and the pair-leg sampler.

    Closed candles, corrections and leg samples enter the outbox (stored with the state under
    ``"outbox"``); live candles (at most one per ``live_candle_ms`` per symbol and interval) do not.
    With ``colocated`` the leg samples are returned as :data:`LOCAL_LEG` outputs, outside the outbox:
    the same agent applies them to its :class:`PairBook` in the same event. With ``quotes`` (mid prices)
    the bid and ask of the sampled book update ride along with each sample (``bid``, ``ask``: two more
    samplers on the same clock, state under ``"quotes"``; see :mod:`rtqis.agents.quotes`).
    """

    def __init__(
        self, settings: Settings, *, candles: bool, sample: bool, colocated: bool = False, quotes: bool = False
    ) -> None:
        self.colocated = colocated
        self.quotes = quotes
        self.symbols = list(settings.symbols)
        self.intervals: list[tuple[str, int]] = (
            [(iv, interval_ms(iv)) for iv in settings.candle_intervals] if candles else []
        )
        self.legs = pair_legs(settings) if sample else {}
        self.step_ms = settings.sample_ms
        self.max_fill = max(1, int(settings.stale_after_s * 1000 // settings.sample_ms) + 1)
        self.grace_ms = settings.candle_grace_ms
        self.live_s = settings.live_candle_ms / 1000.0
        self.cache: dict[str, tuple[int, dict[str, CandleState], LegSampler | None, _Quoters | None]] = {}
        self.last_live: dict[tuple[str, str], float] = {}  # (symbol, interval) -> monotonic s
        self.outbox: Outbox[dict[str, Any]] = Outbox(candle_output_key)

    def forget(self) -> None:
        """Drop what this book keeps in memory (decoded states, sent outputs): the next event starts from
        the table, as in a restarted worker. After an event failed half-way, whose in-place updates
        may be in the cache."""
        self.cache.clear()
        self.outbox.forget_sent()

    def _states(
        self, sym: str, stored: dict[str, Any]
    ) -> tuple[int, dict[str, CandleState], LegSampler | None, _Quoters | None]:
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
        sampler = quoters = None
        if sym in self.legs:
            sampler = (
                LegSampler.from_state(stored["sampler"])
                if "sampler" in stored
                else LegSampler(step_ms=self.step_ms, max_fill=self.max_fill)
            )
            if self.quotes:
                q = stored.get("quotes") or {}
                bid, ask = (
                    LegSampler.from_state(q[k]) if k in q else LegSampler(step_ms=self.step_ms, max_fill=self.max_fill)
                    for k in ("bid", "ask")
                )
                quoters = (bid, ask)
        return seq, states, sampler, quoters

    def screen(
        self, sym: str, stored: dict[str, Any], times: Any, ids: Any | None, now_ms: int | None = None
    ) -> list[tuple[int, str]]:
        """[(row, reason)] of the rows of a frame of ``sym`` that must not be applied (sorted by row): all
        of them for a symbol that is not configured, else those beyond the plausibility bounds of
        :mod:`rtqis.schemas.plausibility` against the symbol's clock and trade-id high-water mark in its
        ``stored`` state (``ids`` None: no id bound), at wall-clock ``now_ms`` (default: now)."""
        n = len(times)
        if sym not in self.symbols:
            why = unknown_symbol_reason(sym, self.symbols)
            return [(i, why) for i in range(n)]
        _, states, sampler, _ = self._states(sym, stored)
        clocks = [st.max_time for st in states.values() if st.max_time is not None]
        high = [st.max_trade_id for st in states.values() if st.max_trade_id is not None]
        if sampler is not None and sampler.last_time >= 0:
            clocks.append(sampler.last_time)
        if sampler is not None and sampler.last_id >= 0:
            high.append(sampler.last_id)
        return implausible_rows(times, ids, max(clocks, default=None), max(high, default=None), now_ms)

    def update(
        self,
        sym: str,
        stored: dict[str, Any],
        cols: dict[str, Any],
        sample_cols: tuple[Any, Any, Any] | None,
        quote_cols: tuple[Any, Any] | None = None,
    ) -> tuple[list[Output], dict[str, Any] | None]:
        """Apply a frame of ``sym`` to its ``stored`` state: (outputs in order, new state or None when
        nothing changed).

        ``cols`` are trade columns for the candles (``trade_time``, ``price``, ``qty``, ``buyer_maker``,
        ``trade_id``); ``sample_cols`` = (times ms, prices, ids) for the sampler; ``quote_cols`` =
        (bids, asks) of the same rows (a book built with ``quotes``). Idempotent: trades already applied
        (by id) change nothing.
        """
        seq, states, sampler, quoters = self._states(sym, stored)
        box = self.outbox.restore(stored.get("outbox", []))
        changed = box.changed
        out = [Output(_symbol_kind(r), r, self.outbox.key(r)) for r in box.resend]

        def final(kind: str, row: dict[str, Any]) -> None:
            out.append(Output(kind, row, self.outbox.add(box, row)))

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
                out.extend(Output(iv, row, None) for row in to_rows(upd.live, sym, iv))
        if sampler is not None and sample_cols is not None:
            before = [sampler.state(), *(q.state() for q in quoters or ())]
            t, p, lt = sampler.update(*sample_cols)
            quoted = _sample_quotes(quoters, sample_cols, quote_cols, t)
            changed = changed or [sampler.state(), *(q.state() for q in quoters or ())] != before
            if len(t):
                for pair, leg in self.legs[sym]:
                    row = {"pair": pair, "leg": leg, "symbol": sym, "time": t.tolist(), "price": p.tolist()}
                    row["last_time"] = lt.tolist()
                    if quoted is not None:
                        row["bid"], row["ask"] = quoted
                    if self.colocated:
                        out.append(Output(LOCAL_LEG, row, None))
                    else:
                        final("leg", row)
        if not changed:
            return out, None
        seq += 1
        self.cache[sym] = (seq, states, sampler, quoters)
        self.outbox.commit(box)
        new = {"seq": seq, "state": {iv: st.to_dict() for iv, st in states.items()}, "outbox": box.entries}
        if sampler is not None:
            new["sampler"] = sampler.state()
        if quoters is not None:
            new["quotes"] = {"bid": quoters[0].state(), "ask": quoters[1].state()}
        return out, new


_Quoters = tuple[LegSampler, LegSampler]  # bid, ask samplers


def _sample_quotes(
    quoters: _Quoters | None, sample_cols: tuple[Any, Any, Any], quote_cols: tuple[Any, Any] | None, t: Any
) -> tuple[list[float], list[float]] | None:
    """The bid and ask behind each price sample at times ``t`` (same ticks, same clock, so the same
    samples); None when the book has no quotes or, after a state written without them, the quote
    samplers have not caught up with the price sampler yet."""
    if quoters is None or quote_cols is None:
        return None
    times, _, ids = sample_cols
    tb, pb, _ = quoters[0].update(times, quote_cols[0], ids)
    ta, pa, _ = quoters[1].update(times, quote_cols[1], ids)
    if not (np.array_equal(tb, t) and np.array_equal(ta, t)):
        return None
    return pb.tolist(), pa.tolist()


class PairBook:
    """Per-pair aligner and :class:`PairModel`: leg samples in, ``analytics.pair`` signals, ``alerts``
    and periodic ``analytics.adf`` results out, all through the outbox (consumers upsert by (pair, time)).

    The table holds, per pair, the state (key = pair: aligner, model scalars, outbox as
    ``[kind, row, key]`` entries, ``seq``, ``dropped``, ``quotes``: the legs' bid/ask samples not yet
    joined, :mod:`rtqis.agents.quotes`) and the sample history in chunks of
    :attr:`CHUNK` rows (key = ``pair|chunk``). Chunks are written before the state, so a crash that keeps
    a prefix of an event's writes still loads: the previous state with chunks it does not read past.
    """

    CHUNK = 60  # samples per history chunk

    def __init__(self, settings: Settings, serve: Callable[[], None] | None = None) -> None:
        self.pairs = list(settings.pairs)
        self.params = PairParams.from_settings(settings)
        self.max_pending = max(1, int(settings.align_wait_s * 1000 // settings.sample_ms))
        self.cache: dict[str, tuple[int, PairAligner, PairModel]] = {}
        # ``serve``: the producer's delivery reports, served before each state is written (Outbox.settle)
        self.outbox: Outbox[list[Any]] = Outbox(lambda entry: str(entry[2]), serve)

    def forget(self) -> None:
        """Drop what this book keeps in memory (models, aligners, sent outputs): the next event starts
        from the table, as in a restarted worker (see :meth:`SymbolBook.forget`)."""
        self.cache.clear()
        self.outbox.forget_sent()

    def load(self, pair: str, table: StateTable) -> tuple[int, PairModel | None]:
        """(seq, model) of ``pair`` from the cache when it is current, else from the table (None: no state)."""
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

    def apply(self, msg: m.LegSamples, table: StateTable) -> list[Output]:
        """Apply one message of leg samples to its pair's state in ``table``: the outputs, in order.
        A redelivered message (samples the aligner already has) changes nothing."""
        pair = msg.pair
        seq, model = self.load(pair, table)
        stored = table[pair]
        if model is None:
            aligner, model = PairAligner(max_pending=self.max_pending), PairModel(pair, self.params)
        else:
            aligner = self.cache[pair][1]
        # entries are [kind, row, key] (states written before the key was stored: [kind, row])
        stored_box = [
            [e[0], e[1], e[2] if len(e) > 2 else pair_output_key(e[0], e[1])] for e in stored.get("outbox", [])
        ]
        box = self.outbox.restore(stored_box)
        out = [Output(kind, row, key) for kind, row, key in box.resend]
        if not aligner.push(msg.leg, msg.time, msg.price, msg.last_time) and not box.changed:
            return out  # a redelivered message: nothing new
        quotes = LegQuotes.from_state(stored.get("quotes"))
        quotes.push(msg.leg, msg.time, msg.bid, msg.ask)
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
            (x_bid, x_ask), (y_bid, y_ask) = quotes.at("x", t), quotes.at("y", t)
            st = model.step(t, x, y, xt, yt, x_bid, x_ask, y_bid, y_ask)
            if st is None:
                continue
            new = [(PAIR.name, st.signal)]
            for (kind, threshold), detail in zip(st.alerts, st.alert_details, strict=True):
                new.append((ALERTS.name, _alert_row(st.signal, kind, threshold, detail, _calibration_hedge(model))))
            if st.adf_due and (res := model.adf()) is not None:
                new.append((ADF.name, res))
            for kind, row in new:
                key = self.outbox.add(box, [kind, row, pair_output_key(kind, row)])
                out.append(Output(kind, row, key))
        dropped = self._write_history(pair, table, model, n_before, int(stored.get("dropped", 0)))
        seq += 1
        self.cache[pair] = (seq, aligner, model)
        self.outbox.settle(box)
        self.outbox.commit(box)
        table[pair] = {
            "seq": seq,
            "aligner": aligner.state(),
            "model": model.state(),
            "outbox": box.entries,
            "dropped": dropped,
            "quotes": quotes.state(),
        }
        return out

    def _write_history(self, pair: str, table: StateTable, model: PairModel, n_before: int, dropped: int) -> int:
        """Rewrite the history chunks that got rows since ``n_before`` samples and delete those no state
        needs any more (chunks below ``dropped`` are gone already): the new ``dropped``."""
        if model.n <= n_before:
            return dropped
        hist = list(model.hist)
        base = model.n - len(hist)  # index of hist[0]
        for c in range(n_before // self.CHUNK, (model.n - 1) // self.CHUNK + 1):
            lo, hi = max(c * self.CHUNK, base), (c + 1) * self.CHUNK
            chunk_rows = [list(r) for r in hist[lo - base : hi - base]]
            if lo > c * self.CHUNK:  # the chunk starts before the history held: keep its head
                chunk_rows = table[f"{pair}|{c}"].get("rows", [])[: lo - c * self.CHUNK] + chunk_rows
            table[f"{pair}|{c}"] = {"rows": chunk_rows}
        # drop only chunks that the *previous* state no longer needs: if this event's state is lost in a
        # crash, the previous one (written earlier to the same partition) must still load
        needed_before = (n_before - min(n_before, self.params.history)) // self.CHUNK
        for c in range(dropped, needed_before):
            table.pop(f"{pair}|{c}", None)
        return max(dropped, needed_before)


def _calibration_hedge(model: PairModel) -> float | None:
    """The hedge (x units per unit of y) of the model's current calibration, published or not."""
    beta = model.level.c.beta
    return beta * model.hist[-1][2] / model.hist[-1][1] if model.hist and math.isfinite(beta) else None


def _alert_row(
    sig: dict[str, Any], kind: str, threshold: float, detail: dict[str, Any], fallback_hedge: float | None
) -> dict[str, Any]:
    """The ``alerts`` row of a z-score crossing ``kind`` at ``threshold`` in the signal ``sig``, with the
    alert's cost details (:attr:`~rtqis.analytics.pair_model.Step.alert_details`).

    ``beta`` is the hedge the z-score uses (``sig["hedge"]``, x units per unit of y). An exit may fire
    while that hedge is unpublished (standard error > 100 %): its ``beta`` is then the calibration's
    estimate (``fallback_hedge``), and ``hedge`` stays null.

    ``spread`` is the Kalman prediction error (``sig["spread"]``). The z-score starts at the first
    calibration, the sample at which the calibrated filter gets its first state, so that sample has no
    prediction error yet: an alert there carries the level spread in price units instead
    (``spread_bp`` of y; a null there crashed the agent, and the restarted agent lost its signals)."""
    z = sig["zscore"]
    spread = sig["spread"]
    if spread is None:
        spread = sig["spread_bp"] * sig["y"] / 1e4 if sig.get("spread_bp") is not None else math.nan
    beta = sig["hedge"] if sig["hedge"] is not None else fallback_hedge
    if beta is None:  # not reached: an alert needs a z-score, which needs a calibrated hedge
        beta = math.nan
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
        "spread": spread,
        "beta": beta,
        "x": sig["x"],
        "y": sig["y"],
        "message": f"{sig['pair']} z={z:+.2f} crossed {threshold:+.2f}: {what} (beta {beta:.5g})",
        **detail,
    }
