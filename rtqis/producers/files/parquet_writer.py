"""Write trade or book-ticker chunks to a Parquet file that the Parquet reader reads back."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from rtqis.producers.files.chunks import Kind, SourceChunk

__all__ = ["write_parquet"]


def write_parquet(path: str | Path, chunks: Iterable[SourceChunk]) -> int:
    """Write trade or book-ticker chunks (one kind) to Parquet with a ``symbol`` column; return rows.

    The columns are those read back by this module (:data:`PARQUET_TRADE_COLUMNS` /
    :data:`PARQUET_BOOK_COLUMNS`). The rows are gathered in memory first: meant for modest files.
    """
    frames: list[pl.DataFrame] = []
    kind: Kind | None = None
    for c in chunks:
        if not len(c):
            continue
        if kind is None:
            kind = c.kind
        elif c.kind != kind:
            raise ValueError("write_parquet takes chunks of one kind (trades or book tickers)")
        data: dict[str, Any] = {"symbol": [c.symbol] * len(c)}
        for k, v in c.cols.items():
            data[k] = pl.Series(k, v) if v is not None else pl.Series(k, [None] * len(c), dtype=pl.Int64)
        frames.append(pl.DataFrame(data))
    if not frames:
        raise ValueError("nothing to write")
    df = pl.concat(frames, how="vertical_relaxed")
    df.write_parquet(Path(path))
    return df.height
