"""Column tables for the dashboard: dicts of equal-length numpy arrays, merged by a time key.

Pure numpy, no Bokeh or Kafka, shared by the live hub (one per server process) and the sessions. A table
is never modified in place once handed out: every operation returns new arrays, so the hub can give the
same arrays to many sessions (threads) without copying or locking them.

Merging history (DuckDB) with live data (Kafka) is an *upsert by key*: rows are sorted by their time key
(``open_time`` for candles, ``time`` for pair signals, bucket time for the book) and a later version of a
key replaces the earlier one. That is what makes the seam between history and live data exact: the two
may overlap by any amount, a key is drawn once, with its newest version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Cols",
    "TailPlan",
    "bucket_last",
    "concat",
    "empty",
    "length",
    "rows_to_cols",
    "slice_rows",
    "tail_plan",
    "take",
    "time_window",
    "upsert",
]

Cols = dict[str, np.ndarray]


def length(cols: Mapping[str, np.ndarray]) -> int:
    for v in cols.values():
        return len(v)
    return 0


def empty(dtypes: Mapping[str, Any]) -> Cols:
    """A table with no rows and these column dtypes."""
    return {k: np.empty(0, dtype=dt) for k, dt in dtypes.items()}


def take(cols: Mapping[str, np.ndarray], idx: np.ndarray | slice) -> Cols:
    return {k: v[idx] for k, v in cols.items()}


def slice_rows(cols: Mapping[str, np.ndarray], start: int, stop: int | None = None) -> Cols:
    return {k: v[start:stop] for k, v in cols.items()}


def concat(parts: Sequence[Mapping[str, np.ndarray]]) -> Cols:
    """Row-wise concatenation of tables with the same columns (empty parts skipped)."""
    parts = [p for p in parts if p and length(p)]
    if not parts:
        return {}
    if len(parts) == 1:
        return dict(parts[0])
    names = list(parts[0])
    return {k: np.concatenate([p[k] for p in parts]) for k in names}


def _last_of_each_key(keys: np.ndarray) -> np.ndarray:
    """Indices that sort ``keys`` ascending keeping, for equal keys, only the LAST occurrence."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    keep = np.ones(len(sk), dtype=bool)
    keep[:-1] = sk[1:] != sk[:-1]
    return order[keep]


def upsert(base: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray], key: str, cap: int | None = None) -> Cols:
    """``base`` with the rows of ``new`` upserted by ``key`` (new wins), sorted by key, the last ``cap`` kept.

    Either side may be unsorted or hold repeated keys (the later row wins within ``new`` too).
    """
    if not new or not length(new):
        out = dict(base)
    elif not base or not length(base):
        out = take(new, _last_of_each_key(np.asarray(new[key])))
    else:
        both = concat([{k: base[k] for k in new}, new])
        out = take(both, _last_of_each_key(both[key]))
    if cap is not None and length(out) > cap:
        out = slice_rows(out, length(out) - cap)
    return out


def time_window(cols: Mapping[str, np.ndarray], key: str, start: int | None, end: int | None) -> Cols:
    """Rows with ``start <= key < end`` (either bound may be None); ``cols`` sorted by key."""
    if not cols or not length(cols):
        return dict(cols)
    k = cols[key]
    lo = 0 if start is None else int(np.searchsorted(k, start, side="left"))
    hi = len(k) if end is None else int(np.searchsorted(k, end, side="left"))
    return slice_rows(cols, lo, hi)


def bucket_last(cols: Mapping[str, np.ndarray], key: str, bucket_ms: int) -> Cols:
    """Downsample to the last row of each ``bucket_ms`` bucket of ``key``; the key becomes the bucket start.

    Rows must be in key order (ticks of one symbol are). Used for the top of book: a chart cannot show
    more than a few points per pixel, the last quote of each 100 ms is what a trader reads.
    """
    if not cols or not length(cols):
        return dict(cols)
    t = cols[key]
    b = t - t % bucket_ms
    last = np.ones(len(b), dtype=bool)
    last[:-1] = b[1:] != b[:-1]
    out = take(cols, last)
    out[key] = b[last]
    return out


def rows_to_cols(rows: Iterable[Any], fields: Mapping[str, Any]) -> Cols:
    """Models (or dicts) -> columns of the given dtypes; None becomes NaN in float columns."""
    rows = list(rows)
    out: Cols = {}
    for name, dt in fields.items():
        vals = [(r.get(name) if isinstance(r, Mapping) else getattr(r, name)) for r in rows]
        if np.dtype(dt).kind == "f":
            out[name] = np.array([np.nan if v is None else v for v in vals], dtype=dt)
        elif np.dtype(dt).kind == "O":
            arr = np.empty(len(vals), dtype=object)
            for i, v in enumerate(vals):  # element by element: a list value must stay one cell
                arr[i] = v
            out[name] = arr
        else:
            out[name] = np.array(vals, dtype=dt)
    return out


@dataclass(frozen=True)
class TailPlan:
    """How to apply new rows to a chart's data source whose keys are sorted ascending.

    ``patches``: (row index, row of ``new``) for keys already drawn (the still-open candle, a
    correction); ``stream``: the rows with keys after the last drawn one, in key order.
    """

    patches: list[tuple[int, int]]
    stream: Cols


def tail_plan(drawn_keys: np.ndarray, new: Mapping[str, np.ndarray], key: str) -> TailPlan:
    """Plan an upsert of ``new`` (sorted by key, one row per key) into a source drawn with ``drawn_keys``.

    Keys before the first drawn one, or missing from the middle, are dropped: a chart only scrolls forward;
    a full reload (e.g. after an import) is the way to insert old rows.
    """
    if not new or not length(new):
        return TailPlan([], {})
    k = np.asarray(new[key])
    last = drawn_keys[-1] if len(drawn_keys) else None
    if last is None:
        return TailPlan([], dict(new))
    after = k > last
    patches: list[tuple[int, int]] = []
    old_rows = np.flatnonzero(~after)
    if len(old_rows):
        pos = np.searchsorted(drawn_keys, k[old_rows])
        ok = (pos < len(drawn_keys)) & (drawn_keys[np.minimum(pos, len(drawn_keys) - 1)] == k[old_rows])
        patches = [(int(p), int(r)) for p, r in zip(pos[ok].tolist(), old_rows[ok].tolist(), strict=True)]
    return TailPlan(patches, take(new, after) if after.any() else {})
