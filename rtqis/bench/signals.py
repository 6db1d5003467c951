"""Opt-in section ``signals``: what the pair signals are worth, the issue #20 evaluation.

Runs :func:`rtqis.evaluation.evaluate` (no broker: the seeded synthetic market whose true spread and
hedge are known, through the worker's leg sampling and :class:`~rtqis.analytics.pair_model.PairModel`,
alerts backtested with fills at the next quote) and prints its table, figure against target. With the
defaults (8 seeds x 4 h, hour 1 of each for calibration) it takes a few minutes on 2 cores.
"""

from __future__ import annotations

import logging
from typing import Any

from rtqis.bench.harness import Say
from rtqis.errors import RtqisError

__all__ = ["bench_signals"]

log = logging.getLogger(__name__)


def bench_signals(seeds: int, hours: float, say: Say = print) -> dict[str, Any]:
    """The evaluation's figures (keys of :func:`rtqis.evaluation.evaluate`) over seeds 1..``seeds`` of
    ``hours`` hours each, plus ``targets_met`` / ``targets``: how many of the issue's targets it meets."""
    from rtqis.evaluation import TARGETS, evaluate, table  # numpy/statsmodels work: imported when run

    if hours <= 1.0:
        raise RtqisError(f"--signals-hours must exceed 1 (hour 1 of each seed is calibration), got {hours:g}")
    say(f"signals: evaluating the pair signals on {seeds} seeded synthetic market(s) x {hours:g} h ...")
    res = evaluate(seeds, hours)
    say(table(res))
    met = [k for k, (_, ok) in TARGETS.items() if isinstance(res.get(k), float) and ok(res[k])]
    res["targets"] = len(TARGETS)
    res["targets_met"] = len(met)
    say(f"signals: {len(met)}/{len(TARGETS)} targets met in {res['seconds']:.0f} s")
    return res
