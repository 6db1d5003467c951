"""What goes into a table and what comes out, as polars frames typed exactly like the table.

Inputs of a write (pydantic models, plain mappings, tick frames of many symbols, a candles DataFrame,
consumer offsets) become one DataFrame per table, checked before any transaction starts: dtypes cast
strictly, NOT NULL columns filled, one row per key (the last one wins, as a later write would). Models
that are already validated (what the sink decoded) are dumped as they are, never validated again; only
plain mappings go through their model. Reads come back from DuckDB's ``fetchnumpy`` the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from rtqis.schemas import models as m
from rtqis.schemas.frames import Frame
from rtqis.sinks.schema import CANDLES, SOURCES, StoreError, Table, now_ms

__all__ = ["candles_df", "frames_df", "models_df", "offset_rows"]


def _finish(table: Table, df: pl.DataFrame, what: str) -> pl.DataFrame:
    """Cast to the table's dtypes, refuse NULLs in NOT NULL columns, keep the last row of each key."""
    try:
        df = df.select(pl.col(c).cast(dt, strict=True) for c, (dt, _) in table.columns.items())
    except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
        raise StoreError(f"{what}: a column has the wrong type: {e}") from None
    for c, (_, nullable) in table.columns.items():
        if not nullable and df[c].null_count():
            first = int(df[c].is_null().arg_true()[0])
            raise StoreError(f"{what}: row {first}: {c} is missing (NULL)")
    # DuckDB keeps only the FIRST of duplicate keys within one INSERT; a later write must win
    return df.unique(subset=list(table.key), keep="last", maintain_order=True)


def candles_df(rows: pl.DataFrame | Sequence[Mapping[str, Any] | m.Candle], source: str | None) -> pl.DataFrame:
    """The ``candles`` rows of a write: a DataFrame (columns of the table, optional ones may be absent),
    validated :class:`~rtqis.schemas.models.Candle` models, or mappings (validated here). ``source``
    overrides every row's (default: the row's own, ``'stream'`` if absent); ``updated_at`` is now."""
    if isinstance(rows, pl.DataFrame):
        df = rows
    else:
        dicts: list[dict[str, Any]] = []
        for i, r in enumerate(rows):
            try:
                bar = r if isinstance(r, m.Candle) else m.Candle.model_validate(r)
            except ValueError as e:
                raise StoreError(f"candles: row {i}: {e}") from None
            dicts.append(bar.model_dump(exclude={"correction"}))
        df = pl.DataFrame(dicts, schema={k: v[0] for k, v in CANDLES.columns.items() if k != "updated_at"})
    unknown = set(df.columns) - set(CANDLES.columns) - {"correction"}
    if unknown:
        raise StoreError(f"candles: unknown columns {sorted(unknown)}")
    required = {c for c, (_, nullable) in CANDLES.columns.items() if not nullable} - {"closed", "source"}
    missing = required - set(df.columns)
    if missing:
        raise StoreError(f"candles: missing columns {sorted(missing)}")
    extra: list[pl.Expr] = [pl.lit(now_ms(), dtype=pl.Int64()).alias("updated_at")]
    for c, (dt, _) in CANDLES.columns.items():
        if c not in df.columns and c not in ("source", "closed", "updated_at"):
            extra.append(pl.lit(None, dtype=dt).alias(c))
    if source is not None or "source" not in df.columns:
        extra.append(pl.lit(source or "stream", dtype=pl.String()).alias("source"))
    if "closed" not in df.columns:
        extra.append(pl.lit(True).alias("closed"))
    df = df.with_columns(extra)
    bad = df.filter(~pl.col("source").is_in(list(SOURCES)) | pl.col("source").is_null())
    if bad.height:
        raise StoreError(f"candles: source must be one of {list(SOURCES)}, got {bad['source'][0]!r}")
    return _finish(CANDLES, df, "candles")


def frames_df(table: Table, frames: Sequence[Frame], type_name: str) -> pl.DataFrame:
    """Concatenate frames of many symbols into one DataFrame, column by column (no per-row work)."""
    frames = [f for f in frames if len(f)]
    for f in frames:
        if f.type.name != type_name:
            raise StoreError(f"{table.name}: expected {type_name} frames, got {f.type.name}")
    if not frames:
        return pl.DataFrame(schema={k: v[0] for k, v in table.columns.items()})
    lens = np.fromiter((len(f) for f in frames), dtype=np.int64, count=len(frames))
    idx = np.repeat(np.arange(len(frames)), lens)
    data: dict[str, pl.Series] = {
        "symbol": pl.Series("symbol", [f.symbol for f in frames], dtype=pl.String()).gather(idx)
    }
    for name, (dt, _) in table.columns.items():
        if name == "symbol":
            continue
        parts = [f.cols.get(name) for f in frames]
        if all(p is not None for p in parts):
            data[name] = pl.Series(name, np.concatenate(parts))  # type: ignore[arg-type]  # checked not None
        else:
            data[name] = pl.concat(
                [
                    pl.Series(name, p) if p is not None else pl.repeat(None, n, dtype=dt, eager=True).alias(name)
                    for p, n in zip(parts, lens.tolist(), strict=True)
                ]
            ).cast(dt)
    return _finish(table, pl.DataFrame(data), table.name)


def models_df(table: Table, model: type[m.Message], rows: Sequence[Mapping[str, Any] | m.Message]) -> pl.DataFrame:
    """The rows of a model table: ``model`` instances as they are, mappings validated through ``model``."""
    dicts: list[dict[str, Any]] = []
    for i, r in enumerate(rows):
        try:
            obj = r if isinstance(r, model) else model.model_validate(r)
        except ValueError as e:
            raise StoreError(f"{table.name}: row {i}: {e}") from None
        d = obj.model_dump()
        if "request_id" in table.columns and d.get("request_id") is None:
            d["request_id"] = ""
        dicts.append(d)
    df = pl.DataFrame(dicts, schema={k: v[0] for k, v in table.columns.items()})
    return _finish(table, df, table.name)


def offset_rows(offsets: Mapping[tuple[str, int], int]) -> list[tuple[str, int, int, int]]:
    """``{(topic, partition): next_offset}`` as ``consumer_offsets`` parameter rows, stamped now."""
    now = now_ms()
    out = []
    for key, off in offsets.items():
        try:
            topic, part = key
            out.append((str(topic), int(part), int(off), now))
        except (TypeError, ValueError):
            raise StoreError(f"offsets: expected {{(topic, partition): offset}}, got {key!r}: {off!r}") from None
    return out
