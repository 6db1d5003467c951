"""Rolling z-score ``(v - mean) / std`` of each value against its trailing window: :func:`zscore` (batch)
and :class:`RollingZScore` (one value per ``update``, O(1)).

Units: z is in standard deviations (population std, ddof=0), whatever the input's units. Reference:
exact :class:`fractions.Fraction` arithmetic (batch to 1e-12 absolute near 54,000 with tiny moves,
incremental to 1e-10) and numpy's ``std(ddof=0)`` on BTC/ETH spreads (tests/test_pair_kernels.py).
Named ``zscores`` so that the module does not shadow the function :func:`rtqis.analytics.zscore`.
Invalid observations, precision and snapshots follow the rules in :mod:`rtqis.analytics.pairs`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from rtqis.analytics._common import (
    _BLOCK,
    _NAN,
    _STATE_VERSION,
    VALUE_LIMIT,
    FloatArray,
    _as_float,
    _check_version,
    _check_window,
    _valid,
    _windows_all_equal,
)

__all__ = ["RollingZScore", "zscore"]

logger = logging.getLogger(__name__)


def zscore(spread: npt.ArrayLike, window: int) -> FloatArray:
    """Rolling z-score ``(v - mean) / std`` of each value against the trailing ``window`` valid values.

    The window includes the value itself. ``std`` is the *population* standard deviation (ddof=0): the
    window is the whole reference set the current value is judged against, not a sample from which a
    wider variance is estimated, and ddof=0 is what streaming engines and most trading code use
    (ddof=1 would scale z by ``sqrt((window-1)/window)``). NaN until the window is full, NaN (never inf)
    where every value in the window is equal, NaN at invalid inputs. Two-pass on values shifted by the
    current value: a plain ``mean`` of values near 5e4 is off by ~1e-11, which is 1e-8 of a z-score when
    the window's std is a few thousandths.
    """
    v = _as_float(spread, "spread")
    w = _check_window(window)
    ok = _valid(v)
    vs = v[ok]
    z = np.full(len(vs), np.nan)
    n_win = max(len(vs) - w + 1, 0)
    win_all = sliding_window_view(vs, w) if n_win else None
    for start in range(0, n_win, _BLOCK):
        assert win_all is not None
        win = win_all[start : start + _BLOCK]
        u = win - win[:, -1:]  # deviations from the current value: exact for nearby values (Sterbenz)
        m = u.mean(axis=1)
        d = u - m[:, None]
        sd = np.sqrt(np.einsum("ij,ij->i", d, d) / w)
        flat = _windows_all_equal(win)
        z[start + w - 1 : start + w - 1 + len(m)] = np.divide(-m, sd, out=np.full_like(sd, np.nan), where=~flat)
    out = np.full(v.shape, np.nan)
    out[ok] = z
    return out


class RollingZScore:
    """Incremental :func:`zscore` (population std) with anchored sums; O(1) per ``update``."""

    __slots__ = ("_buf", "_pos", "_run", "_s1", "_s2", "_since", "_v0", "window")
    _KIND = "RollingZScore"

    def __init__(self, window: int) -> None:
        self.window = _check_window(window)
        self._buf: list[float] = []
        self._pos = 0
        self._v0 = 0.0
        self._s1 = self._s2 = 0.0
        self._run = 0
        self._since = 0

    @property
    def zero_variance(self) -> bool:
        """True when the window is full and all its values are equal (the z-score is then undefined)."""
        return len(self._buf) == self.window and self._run >= self.window

    def update(self, v: float) -> tuple[float, bool]:
        """Add one value; return ``(z, zero_variance)``. ``z`` is NaN while warming up, on a flat window
        (then ``zero_variance`` is True) and for an invalid value (skipped; the flag describes the window)."""
        if not -VALUE_LIMIT < v < VALUE_LIMIT:
            return _NAN, self.zero_variance
        v = float(v)
        buf, w = self._buf, self.window
        n = len(buf)
        if n == 0:
            self._v0 = v
            self._run = 1
        else:
            self._run = min(self._run + 1, w) if v == buf[self._pos - 1] else 1
        d = v - self._v0
        s1, s2 = self._s1 + d, self._s2 + d * d
        if n == w:
            p = self._pos
            o = buf[p] - self._v0
            s1, s2 = s1 - o, s2 - o * o
            buf[p] = v
            self._pos = p + 1 if p + 1 < w else 0
        else:
            buf.append(v)
        self._since += 1
        if self._since >= w:
            ds = [u - v for u in buf]
            self._v0, self._s1, self._s2 = v, math.fsum(ds), math.fsum([a * a for a in ds])
            self._since = 0
            d = 0.0
        else:
            self._s1, self._s2 = s1, s2
        if n + 1 < w:
            return _NAN, False
        if self._run >= w:
            return _NAN, True
        m = self._s1 / w
        var = (self._s2 - self._s1 * m) / w
        if var <= 0.0:  # rounding on an almost flat window
            return _NAN, False
        return (d - m) / math.sqrt(var), False

    def state(self) -> dict[str, Any]:
        """JSON-safe snapshot; :meth:`from_state` restores it bit for bit."""
        return {
            "kind": self._KIND,
            "version": _STATE_VERSION,
            "window": self.window,
            "buf": list(self._buf),
            "pos": self._pos,
            "v0": self._v0,
            "s1": self._s1,
            "s2": self._s2,
            "run": self._run,
            "since": self._since,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> RollingZScore:
        """Restore an object saved with :meth:`state`."""
        _check_version(d, cls._KIND)
        obj = cls(int(d["window"]))
        obj._buf = [float(v) for v in d["buf"]]
        obj._pos, obj._run, obj._since = int(d["pos"]), int(d["run"]), int(d["since"])
        obj._v0, obj._s1, obj._s2 = float(d["v0"]), float(d["s1"]), float(d["s2"])
        return obj
