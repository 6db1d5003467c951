"""Pair-analytics kernels: rolling OLS, Kalman hedge ratio, Huber fair value, rolling z-score, ADF test.

Where
    One module per kernel; this one re-exports their public names (import from here or from
    :mod:`rtqis.analytics`): :mod:`.ols` (:func:`rolling_ols`, :class:`RollingOLS`), :mod:`.zscores`
    (:func:`zscore`, :class:`RollingZScore`), :mod:`.kalman` (:func:`kalman_hedge`, :class:`KalmanHedge`,
    :class:`KalmanResult`), :mod:`.huber` (:func:`huber_fit`, :class:`HuberFairValue`) and :mod:`.adf`
    (:func:`adf_test`, :class:`AdfResult`). :data:`VALUE_LIMIT` and the helpers that implement the rules
    below are in :mod:`._common`.

What
    Each kernel comes twice: a batch function over whole numpy arrays (backtests, tests, on-demand
    requests) and an incremental object whose ``update`` takes one observation (live agents). On the same
    data both give the same numbers; the batch forms are the reference. Pure maths: no I/O, no Kafka.

Invalid observations
    A value that is NaN, +-inf or absurdly large (``abs(v) >= 1e100``, :data:`VALUE_LIMIT`; no price is
    that large and its square would overflow the running sums) is *skipped*: the incremental state is
    left exactly as it was, as if the observation had never arrived. ``update`` then reports the current
    model estimates (OLS/Kalman/Huber ``beta``, ``alpha``, unchanged) and NaN for what describes the
    observation itself (Kalman ``error``/``error_var``, the z-score). Batch functions do the same: windows
    count valid observations only, and an invalid row gets the estimate carried over from the row before.
    The Kalman filter's clock is the observation count, so a skipped observation is not a missing time
    step: it gets no predict step either. Together with "NaN until the window is full" this means the
    state never holds a NaN or inf.

Precision
    Prices near 1e5 with moves of a cent lose most of their digits in plain running sums of ``x`` and
    ``x**2`` (``var = E[x^2] - E[x]^2`` cancels ~10 of 16 digits). The incremental windows therefore keep
    sums of deviations from an *anchor* (a recent value of the series), so the sums hold only the small
    moves; the anchor is a value of the series itself, so ``x - anchor`` is exact for every ``x`` within a
    factor 2 of it (Sterbenz). Every ``window`` updates the anchor moves to the newest value and the sums
    are recomputed from the window buffer with :func:`math.fsum`, so rounding drift cannot accumulate.
    "All values in the window are equal" (variance exactly zero) is detected exactly by counting the run
    of equal trailing values, never by comparing a rounded variance with zero.

Snapshots
    ``state()`` returns a JSON-safe dict (floats, ints, bools, lists, None for NaN) and
    ``from_state(d)`` restores it; continuing after a restore gives bit-identical outputs, because JSON
    round-trips float64 exactly and the buffers keep their order.
"""

from __future__ import annotations

import logging

from rtqis.analytics._common import VALUE_LIMIT
from rtqis.analytics.adf import AdfResult, adf_test
from rtqis.analytics.huber import HuberFairValue, huber_fit
from rtqis.analytics.kalman import KalmanHedge, KalmanResult, kalman_hedge
from rtqis.analytics.ols import RollingOLS, rolling_ols
from rtqis.analytics.zscores import RollingZScore, zscore

__all__ = [
    "VALUE_LIMIT",
    "AdfResult",
    "HuberFairValue",
    "KalmanHedge",
    "KalmanResult",
    "RollingOLS",
    "RollingZScore",
    "adf_test",
    "huber_fit",
    "kalman_hedge",
    "rolling_ols",
    "zscore",
]

logger = logging.getLogger(__name__)
