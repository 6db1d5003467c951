"""Frames: many ticks of one symbol in columns, the unit on the tick topics.

One Kafka message per tick costs a Faust event (~250 us) per tick; one message per frame costs it per
frame, and the maths runs vectorised over numpy columns (figures in ``bench/README.md``).

Every frame a producer sends is built here, by :meth:`Frame.build` (columns, checked) or
:meth:`Frame.from_rows` (row models), and cut to size by :meth:`Frame.split`: the synthetic feed, the
file source and the live framer all use them, so they put the same bytes on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtqis.errors import SchemaError
from rtqis.schemas import models as m
from rtqis.schemas.registry import FRAME_TYPES, FrameType
from rtqis.schemas.rows import check_columns

__all__ = [
    "BOOK_FRAME",
    "TRADE_FRAME",
    "Frame",
    "invalid_rows_reason",
    "unknown_symbol_reason",
    "validate_book_frame",
    "validate_trade_frame",
]

TRADE_FRAME = FRAME_TYPES["rtqis.TradeFrame"]
BOOK_FRAME = FRAME_TYPES["rtqis.BookTickerFrame"]


@dataclass(slots=True)
class Frame:
    """Rows of one symbol; ``cols`` maps each field to a numpy array (or None for an absent optional)."""

    type: FrameType
    symbol: str
    cols: dict[str, np.ndarray | None]

    def __len__(self) -> int:
        for v in self.cols.values():
            if v is not None:
                return len(v)
        return 0

    @property
    def schema_name(self) -> str:
        return self.type.name

    @classmethod
    def build(cls, ftype: FrameType, symbol: str, cols: dict[str, Any]) -> Frame:
        """Check names, lengths and dtypes; raise :class:`SchemaError` with the reason if wrong."""
        expected = set(ftype.dtypes)
        got = set(cols)
        if got != expected:
            missing, extra = sorted(expected - got), sorted(got - expected)
            missing = [k for k in missing if k not in ftype.optional]
            if missing or extra:
                raise SchemaError(f"{ftype.name}: missing columns {missing}, unexpected {extra}")
        if not isinstance(symbol, str) or not symbol:
            raise SchemaError(f"{ftype.name}: symbol must be a non-empty string")
        out: dict[str, np.ndarray | None] = {}
        n = -1
        for name, dtype in ftype.dtypes.items():
            v = cols.get(name)
            if v is None:
                if name not in ftype.optional:
                    raise SchemaError(f"{ftype.name}: column {name} is null")
                out[name] = None
                continue
            try:
                arr = np.asarray(v)
                if arr.dtype == object or arr.ndim != 1:
                    raise ValueError("not a flat array of numbers")
                if dtype is np.bool_ and arr.dtype != np.bool_:
                    raise ValueError("not booleans")
                if np.issubdtype(dtype, np.integer) and not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
                    raise ValueError("not integers")
                if arr.dtype.kind not in "biuf":
                    raise ValueError(f"dtype {arr.dtype}")
                arr = arr.astype(dtype, copy=False)
            except (TypeError, ValueError, OverflowError) as e:
                raise SchemaError(f"{ftype.name}: column {name}: {e}") from None
            if n < 0:
                n = len(arr)
            elif len(arr) != n:
                raise SchemaError(f"{ftype.name}: column {name} has {len(arr)} rows, expected {n}")
            out[name] = arr
        return cls(ftype, symbol, out)

    @classmethod
    def from_rows(cls, ftype: FrameType, rows: Sequence[m.Message]) -> Frame:
        """A frame of model rows (all of one symbol)."""
        if not rows:
            raise SchemaError("a frame needs at least one row")
        symbol = rows[0].symbol  # type: ignore[attr-defined]  # every frame row model has a symbol
        cols: dict[str, Any] = {}
        for name in ftype.dtypes:
            vals = [getattr(r, name) for r in rows]
            cols[name] = None if (name in ftype.optional and any(v is None for v in vals)) else vals
        return cls.build(ftype, symbol, cols)

    def to_wire(self) -> dict[str, Any]:
        """Plain dict of the frame (symbol + columns as numpy arrays)."""
        d: dict[str, Any] = {"symbol": self.symbol}
        d.update(self.cols)
        return d

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """One dict per row, fields in schema order (for ``tail`` and tests, not for hot paths)."""
        names = list(self.type.dtypes)
        cols = [self.cols[k].tolist() if self.cols[k] is not None else None for k in names]  # type: ignore[union-attr]
        for i in range(len(self)):
            row: dict[str, Any] = {"symbol": self.symbol}
            for k, c in zip(names, cols, strict=True):
                row[k] = c[i] if c is not None else None
            yield row

    def models(self) -> list[m.Message]:
        return [self.type.row(**r) for r in self.iter_rows()]

    def split(self, max_ticks: int | None = None) -> list[Frame]:
        """This frame as frames of at most ``max_ticks`` rows, in order (views of the same arrays, no
        copy); ``[self]`` if it is small enough or ``max_ticks`` is None, ``[]`` if it is empty."""
        n = len(self)
        step = max_ticks or n
        if n <= step:
            return [self] if n else []
        return [
            Frame(
                self.type, self.symbol, {k: (v[i : i + step] if v is not None else None) for k, v in self.cols.items()}
            )
            for i in range(0, n, step)
        ]

    def take(self, mask: np.ndarray) -> Frame:
        """The rows where ``mask`` is true."""
        return Frame(self.type, self.symbol, {k: (v[mask] if v is not None else None) for k, v in self.cols.items()})


def _part(v: np.ndarray | None, start: int, size: int) -> np.ndarray | None:
    return v[start : start + size] if v is not None else None


def validate_trade_frame(f: Frame) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Vectorised checks of a trade frame: (mask of good rows, [(row, reason)] of bad ones).

    The trade rules of :mod:`rtqis.schemas.rows`, the same every reader applies: ids >= 0, finite
    price and qty > 0, times > 0.
    """
    return check_columns("trade", f.cols, len(f))


def validate_book_frame(f: Frame) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Vectorised checks of a book-ticker frame (:mod:`rtqis.schemas.rows`): finite positive prices and
    quantities, ids >= 0, times > 0, bid < ask."""
    return check_columns("book", f.cols, len(f))


def unknown_symbol_reason(symbol: str, symbols: Sequence[str]) -> str:
    """Why every row of ``symbol`` is refused when it is not one of the configured ``symbols``."""
    return f"unknown symbol {symbol!r} (configured: {', '.join(symbols)})"


def invalid_rows_reason(bad: Sequence[tuple[int, str]]) -> str:
    """The dead-letter reason of a frame's refused ``(row, reason)`` pairs, the same for the worker and the
    sink: their count, then the first ten of them."""
    return f"{len(bad)} invalid rows: " + "; ".join(f"row {i}: {r}" for i, r in bad[:10])
