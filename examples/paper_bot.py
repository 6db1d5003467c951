#!/usr/bin/env python
"""A paper-trading bot: follows one pair's PairSignals and Alerts, keeps a paper position and its PnL.

It trades what the alerts say (``enter_long_spread`` -> long the spread: long 1 unit of y, short
``hedge`` units of x; ``enter_short_spread`` -> the opposite; ``exit`` -> flat) with the SAME cost
model as the backtest engine, by calling it (:mod:`rtqis.analytics.backtest`): the hedge is frozen
at entry, each decision fills at the first best bid/ask of each leg strictly after the signal time
(``ticks.book``), buys pay the ask and sells receive the bid, and ``--fee-bps`` is paid per leg per
side. Its PnL over a replay therefore equals ``rtqis backtest``'s on the same signals and quotes
(``tests/test_client.py`` checks it to 1e-9).

Run it against ``rtqis up`` (live) or a replay (``--namespace NAME``)::

    python examples/paper_bot.py                        # live, from now on
    python examples/paper_bot.py --since earliest --namespace day1 --until-end
    python examples/paper_bot.py --since 2024-08-09T00:00:00Z --fee-bps 7.5

A trade is printed once its exit is filled (a quote of both legs after the exit signal exists);
Ctrl-C prints the final PnL (an open position is closed at the last quotes, as the engine does).
The bot keeps its whole history in memory: a sketch for a day of 1 s signals, not for months.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from rtqis.analytics.alerts import ENTER_LONG, ENTER_SHORT, EXIT
from rtqis.analytics.backtest import BacktestResult, backtest, first_quote_after, positions_from_alerts
from rtqis.client import Since, parse_since, subscribe
from rtqis.errors import RtqisError
from rtqis.schemas import models as m
from rtqis.schemas.frames import Frame
from rtqis.settings import Settings, load_settings
from rtqis.topics import ALERTS, BOOK, PAIR

__all__ = ["PaperBook", "main", "run"]

log = logging.getLogger("paper_bot")

_KINDS = (ENTER_LONG, ENTER_SHORT, EXIT)


@dataclass
class _Quotes:
    time: list[int] = field(default_factory=list)
    bid: list[float] = field(default_factory=list)
    ask: list[float] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.asarray(self.time, np.int64)
        order = np.argsort(t, kind="stable")  # frames of one symbol come in order; be safe anyway
        return t[order], np.asarray(self.bid, np.float64)[order], np.asarray(self.ask, np.float64)[order]


class PaperBook:
    """The bot's state: signal rows (time, hedge), alerts (time, kind), both legs' quotes; the PnL is
    the backtest engine run over them (:meth:`result`), so it cannot drift from the engine's."""

    def __init__(self, pair: str, fee_bps: float = 10.0, qty: float = 1.0) -> None:
        y, sep, x = pair.partition("/")
        if not sep or not x or not y:
            raise RtqisError(f"pair {pair!r} is not of the form Y/X (e.g. ETHUSDT/BTCUSDT)")
        self.pair, self.x_symbol, self.y_symbol = pair, x, y
        self.fee_bps, self.qty = fee_bps, qty
        self.time: list[int] = []
        self.hedge: list[float] = []
        self.alert_time: list[int] = []
        self.alert_kind: list[str] = []
        self.quotes = {x: _Quotes(), y: _Quotes()}
        self.printed = 0  # trades printed so far
        self._announced = -1  # entry time of the open position printed last
        self._unsettled: int | None = None  # earliest alert time whose fill quotes are not in yet

    # --- events ------------------------------------------------------------------------------------
    def on_signal(self, s: m.PairSignal) -> None:
        if s.pair != self.pair:
            return
        h = s.hedge if s.hedge is not None else s.kalman_beta  # kalman_beta: signals written before #20
        self.time.append(s.time)
        self.hedge.append(float(h) if h is not None else math.nan)

    def on_alert(self, a: m.Alert) -> None:
        if a.pair != self.pair or a.kind not in _KINDS:
            return
        self.alert_time.append(a.time)
        self.alert_kind.append(a.kind)
        self._unsettled = a.time if self._unsettled is None else min(self._unsettled, a.time)

    def on_quotes(self, f: Frame) -> None:
        q = self.quotes.get(f.symbol)
        if q is None or not len(f):
            return
        times = f.cols["event_time"] if f.cols.get("event_time") is not None else f.cols["recv_time"]
        assert times is not None and f.cols["bid_price"] is not None and f.cols["ask_price"] is not None
        q.time.extend(times.tolist())
        q.bid.extend(f.cols["bid_price"].tolist())
        q.ask.extend(f.cols["ask_price"].tolist())

    # --- the engine --------------------------------------------------------------------------------
    def filled_until(self) -> int:
        """Decisions at or before this time (epoch ms) have their fill quotes on both legs."""
        last = [q.time[-1] if q.time else -1 for q in self.quotes.values()]
        return min(last) - 1

    def due(self) -> bool:
        """True once the fill quotes of an alert not yet reported are in (and a later signal row exists,
        so the engine's close at the end of the data is not mistaken for the exit): time to report."""
        u = self._unsettled
        if u is not None and self.time and u < self.time[-1] and u <= self.filled_until():
            self._unsettled = None
            return True
        return False

    def result(self) -> BacktestResult | None:
        """The backtest engine over everything seen so far (None before signals and quotes of both legs).

        Rows are the pair's signals; each alert moves the target position at the last signal row at or
        before its time; fills are the first quotes after each row's time (the engine's own helpers)."""
        if not self.time or any(not q.time for q in self.quotes.values()):
            return None
        t = np.asarray(self.time, np.int64)
        order = np.argsort(t, kind="stable")
        t, hedge = t[order], np.asarray(self.hedge, np.float64)[order]
        at = np.asarray(self.alert_time, np.int64)
        rows = np.searchsorted(t, at, side="right") - 1
        keep = rows >= 0  # an alert before the first signal seen has no row (a bot started mid-way)
        ak = np.argsort(at[keep], kind="stable")
        kinds = [k for k, ok in zip(self.alert_kind, keep.tolist(), strict=True) if ok]
        pos = positions_from_alerts(len(t), rows[keep][ak], [kinds[i] for i in ak])
        qx, qy = self.quotes[self.x_symbol].arrays(), self.quotes[self.y_symbol].arrays()
        xb, xa = first_quote_after(t, *qx)
        yb, ya = first_quote_after(t, *qy)
        return backtest(t, pos, hedge, xb, xa, yb, ya, fee_bps=self.fee_bps, qty=self.qty)

    def report(self, out: Callable[[str], Any], final: bool = False) -> BacktestResult | None:
        """Print the trades closed since the last report (all of them when ``final``) and the PnL."""
        res = self.result()
        if res is None:
            if final:
                out(f"final {self.pair}: no trades (signals {len(self.time)}, quotes "
                    f"{ {s: len(q.time) for s, q in self.quotes.items()} })")  # fmt: skip
            return None
        tr = res.trades
        done = len(tr["exit_time"])
        if not final:  # the last "trade" may be the engine's close at the end of the data: not yet real
            cutoff = min(self.filled_until(), int(res.time[-1]) - 1)
            done = int(np.searchsorted(tr["exit_time"], cutoff, side="right"))
        for i in range(self.printed, done):
            side = "long " if tr["side"][i] > 0 else "short"
            out(
                f"trade {side} spread {_iso(tr['entry_time'][i])} -> {_iso(tr['exit_time'][i])} "
                f"hedge {tr['hedge'][i]:.6g} y {tr['entry_y'][i]:.6g} -> {tr['exit_y'][i]:.6g} "
                f"gross {tr['gross'][i]:+.4f} net {tr['net'][i]:+.4f}"
            )
        if final:
            self.printed = done
            out(
                f"final {self.pair}: {done} round trips, gross {res.gross_pnl:.4f} spread {res.spread_cost:.4f} "
                f"fees {res.fees:.4f} ({self.fee_bps:g} bp/leg/side) net {res.net_pnl:.4f}"
            )
        else:
            if done > self.printed:
                self.printed = done
                out(
                    f"pnl {self.pair}: {done} round trips closed, gross {float(np.sum(tr['gross'][:done])):.4f} "
                    f"net {float(np.sum(tr['net'][:done])):.4f} ({self.fee_bps:g} bp/leg/side)"
                )
            if len(tr["entry_time"]) > done:  # a position is open (the engine closes it at the data's end)
                entry = int(tr["entry_time"][-1])
                if entry != self._announced and entry <= self.filled_until():
                    self._announced = entry
                    side = "long " if tr["side"][-1] > 0 else "short"
                    out(f"open  {side} spread {_iso(entry)} hedge {tr['hedge'][-1]:.6g} y {tr['entry_y'][-1]:.6g}")
        return res


def _say(line: str) -> None:
    """The bot's output: one line to stdout, flushed (it may be a pipe or a log file)."""
    print(line, flush=True)  # noqa: T201  (a script's output)


def _iso(ms: Any) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def run(
    settings: Settings,
    *,
    since: Since = "latest",
    fee_bps: float = 10.0,
    namespace: str | None = None,
    pair: str | None = None,
    group: str | None = None,
    stop_at_end: bool = False,
    out: Callable[[str], Any] = _say,
) -> PaperBook:
    """Follow the pair's signals, alerts and quotes until the end (``stop_at_end``) or Ctrl-C."""
    book = PaperBook(pair or settings.pairs[0], fee_bps)
    with subscribe(
        [PAIR, ALERTS, BOOK], since=since, group=group, namespace=namespace, settings=settings, stop_at_end=stop_at_end
    ) as sub:
        out(f"following {book.pair} on {', '.join(sub.topics)} since {since} (fees {fee_bps:g} bp/leg/side)")
        try:
            for msg in sub:
                if isinstance(msg, m.PairSignal):
                    book.on_signal(msg)
                elif isinstance(msg, m.Alert):
                    book.on_alert(msg)
                elif isinstance(msg, Frame):
                    book.on_quotes(msg)
                if book.due():
                    book.report(out)
        except KeyboardInterrupt:
            out("stopped (Ctrl-C)")
        if sub.stats.skipped:
            out(f"skipped {sub.stats.skipped} undecodable messages (last: {sub.stats.last_skip_reason})")
    book.report(out, final=True)
    return book


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--namespace", default=None, help="replay namespace to read (default: the live topics)")
    ap.add_argument(
        "--since", default="latest", help="latest (default), earliest, epoch ms or an ISO-8601 time with a zone"
    )
    ap.add_argument("--fee-bps", type=float, default=10.0, help="fee per leg per side, bp of notional (default 10)")
    ap.add_argument("--pair", default=None, help="pair Y/X to trade (default: the first configured pair)")
    ap.add_argument("--group", default=None, help="consumer group: a restart resumes where the bot stopped")
    ap.add_argument("--until-end", action="store_true", help="stop at the end of what the topics hold now")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if not (math.isfinite(a.fee_bps) and a.fee_bps >= 0):
            raise RtqisError(f"--fee-bps must be a number >= 0, got {a.fee_bps}")
        run(
            load_settings(),
            since=parse_since(a.since),
            fee_bps=a.fee_bps,
            namespace=a.namespace,
            pair=a.pair,
            group=a.group,
            stop_at_end=a.until_end,
        )
    except RtqisError as e:
        print(f"error: {e}", file=sys.stderr)  # noqa: T201  (a script's output)
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C before the subscription started
        _say("stopped (Ctrl-C)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
