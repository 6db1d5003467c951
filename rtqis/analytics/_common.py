"""Helpers shared by the pair kernels (:mod:`.ols`, :mod:`.zscores`, :mod:`.kalman`, :mod:`.huber`, :mod:`.adf`).

What
    The invalid-value rule (:data:`VALUE_LIMIT`: NaN, +-inf and ``abs(v) >= 1e100`` are skipped), input
    and window checks, spreading batch results computed on the valid rows back over all rows, the exact
    zero-variance test of a window, and the version/``None``-for-NaN helpers of the JSON snapshots.
    Unitless: they act on whatever the kernels are given (prices, spreads). The rules themselves are
    described in :mod:`rtqis.analytics.pairs`; every kernel is tested against its reference with them.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import numpy.typing as npt

# the names the sibling kernel modules import (private ones included: this module is their shared base)
__all__ = [
    "VALUE_LIMIT",
    "_BLOCK",
    "_NAN",
    "_STATE_VERSION",
    "BoolArray",
    "FloatArray",
    "_as_float",
    "_carry_forward",
    "_check_version",
    "_check_window",
    "_nan_if_none",
    "_none_if_nan",
    "_valid",
    "_windows_all_equal",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Values with ``abs(v) >= VALUE_LIMIT`` (and NaN/inf) are invalid observations and skipped.
VALUE_LIMIT = 1e100
_NAN = math.nan
_BLOCK = 8192  # windows per block in the batch functions: bounds memory at _BLOCK * window floats
_STATE_VERSION = 1


def _as_float(a: npt.ArrayLike, name: str, ndim: tuple[int, ...] = (1,)) -> FloatArray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimension(s), got shape {arr.shape}")
    return arr


def _valid(*arrays: FloatArray) -> BoolArray:
    """True where every array holds a usable value (finite and below :data:`VALUE_LIMIT`)."""
    ok = np.ones(arrays[0].shape, dtype=bool)
    for a in arrays:
        with np.errstate(invalid="ignore"):
            ok &= np.abs(a) < VALUE_LIMIT
    return ok


def _check_window(window: int, minimum: int = 2, name: str = "window") -> int:
    if isinstance(window, bool) or int(window) != window or window < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {window!r}")
    return int(window)


def _carry_forward(compressed: FloatArray, ok: BoolArray) -> FloatArray:
    """Spread results computed on the valid rows back over all rows; invalid rows repeat the row before."""
    idx = np.cumsum(ok) - 1
    out = np.full(ok.shape, np.nan)
    has = idx >= 0
    out[has] = compressed[idx[has]]
    return out


def _none_if_nan(v: float) -> float | None:
    return None if math.isnan(v) else v


def _nan_if_none(v: float | None) -> float:
    return _NAN if v is None else float(v)


def _check_version(d: dict[str, Any], kind: str) -> None:
    if d.get("kind") != kind or d.get("version") != _STATE_VERSION:
        raise ValueError(
            f"not a {kind} state (kind={d.get('kind')!r}, version={d.get('version')!r}; "
            f"expected {kind!r}, {_STATE_VERSION})"
        )


def _windows_all_equal(w: FloatArray) -> BoolArray:
    """Exact zero-variance test per window row (a rounded variance may be 1e-30 instead of 0)."""
    return np.asarray((w == w[:, :1]).all(axis=1))
