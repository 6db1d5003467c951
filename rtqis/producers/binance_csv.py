"""Binance public-archive CSVs (data.binance.vision): their layouts, and one row parsed and checked.

CSV layouts (see ``shared/data/README.md``) are described by :class:`CsvLayout` objects;
:func:`layout_for_header` / :func:`layout_for_row` recognise them, :func:`parse_csv_fields` parses one
row and :func:`parse_csv_row` also applies the row rules of :mod:`rtqis.schemas.rows` (the file source
parses blocks with polars, falls back to :func:`parse_csv_fields` for a line polars cannot read, and
applies the same rules to the columns). Values follow the conventions of
:mod:`rtqis.producers.binance_format` (times cut to ms, decimals as float64). Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rtqis.producers.binance_format import MAX_INT64, MIN_INT64, BadMessage, check_row, short_repr, to_ms

__all__ = [
    "BOOKTICKER_ARCHIVE",
    "BOOKTICKER_FUTURES_CAPTURE",
    "BOOKTICKER_SPOT_CAPTURE",
    "CM_TRADES",
    "CM_TRADES_ARCHIVE",
    "CSV_LAYOUTS",
    "FIELD_KINDS",
    "KLINES",
    "SPOT_AGGTRADES",
    "SPOT_TRADES",
    "UM_AGGTRADES",
    "UM_TRADES",
    "CsvLayout",
    "FieldKind",
    "layout_for_header",
    "layout_for_row",
    "parse_csv_fields",
    "parse_csv_row",
    "rule_columns",
]


FieldKind = Literal["int", "float", "time", "bool"]

FIELD_KINDS: dict[str, FieldKind] = {
    # trades
    "trade_id": "int",
    "price": "float",
    "qty": "float",
    "time": "time",
    "buyer_maker": "bool",
    # book tickers
    "update_id": "int",
    "bid_price": "float",
    "bid_qty": "float",
    "ask_price": "float",
    "ask_qty": "float",
    "event_time": "time",
    "transaction_time": "time",
    "recv_time": "time",
    # klines
    "open_time": "time",
    "open": "float",
    "high": "float",
    "low": "float",
    "close": "float",
    "volume": "float",
    "close_time": "time",
    "quote_volume": "float",
    "count": "int",
    "taker_buy_volume": "float",
    "taker_buy_quote_volume": "float",
}
"""How each output field of a CSV row is parsed: ``int``, ``time`` (an integer cut to ms), ``float`` or
``bool`` (true/false, any case). Whether the value is usable is :mod:`rtqis.schemas.rows`."""


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """One CSV layout: the file's columns (in order) and which output field each used column fills.

    ``format`` is the :class:`rtqis.producers.files.FileFormat` value; ``header`` whether files of this
    layout normally start with a header line (both are accepted when reading).
    """

    format: str
    kind: Literal["trade", "book", "kline"]
    columns: tuple[str, ...]
    fields: tuple[tuple[str, str], ...]  # (output field, column name)
    header: bool

    @property
    def out_fields(self) -> tuple[str, ...]:
        return tuple(f for f, _ in self.fields)

    def index(self, header: Sequence[str] | None = None) -> dict[str, int]:
        """Output field -> column position, from the header line if there is one."""
        cols = [c.strip() for c in header] if header is not None else list(self.columns)
        return {f: cols.index(c) for f, c in self.fields}

    @property
    def width(self) -> int:
        return len(self.columns)


def _layout(fmt: str, kind: Literal["trade", "book", "kline"], cols: str, fields: str, header: bool) -> CsvLayout:
    pairs = tuple(tuple(p.split("=")) if "=" in p else (p, p) for p in fields.split(","))
    return CsvLayout(fmt, kind, tuple(cols.split(",")), pairs, header)  # type: ignore[arg-type]


SPOT_TRADES = _layout(
    "spot_trades",
    "trade",
    "id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch",
    "trade_id=id,price,qty,time,buyer_maker=isBuyerMaker",
    header=False,
)
UM_TRADES = _layout(
    "um_trades",
    "trade",
    "id,price,qty,quote_qty,time,is_buyer_maker",
    "trade_id=id,price,qty,time,buyer_maker=is_buyer_maker",
    header=True,
)
CM_TRADES = _layout(
    "cm_trades",
    "trade",
    "id,price,qty_contracts,time,is_buyer_maker",
    "trade_id=id,price,qty=qty_contracts,time,buyer_maker=is_buyer_maker",
    header=True,
)
CM_TRADES_ARCHIVE = _layout(  # COIN-M as published on data.binance.vision: qty in contracts + base qty
    "cm_trades",
    "trade",
    "id,price,qty,base_qty,time,is_buyer_maker",
    "trade_id=id,price,qty,time,buyer_maker=is_buyer_maker",
    header=True,
)
SPOT_AGGTRADES = _layout(
    "spot_aggtrades",
    "trade",
    "agg_id,price,qty,first_id,last_id,time,isBuyerMaker,isBestMatch",
    "trade_id=agg_id,price,qty,time,buyer_maker=isBuyerMaker",
    header=False,
)
UM_AGGTRADES = _layout(
    "um_aggtrades",
    "trade",
    "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker",
    "trade_id=agg_trade_id,price,qty=quantity,time=transact_time,buyer_maker=is_buyer_maker",
    header=True,
)
BOOKTICKER_SPOT_CAPTURE = _layout(  # shared/data/binance/bookticker/*-spot-*: no exchange time
    "bookticker",
    "book",
    "local_recv_ns,update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty",
    "update_id,bid_price=best_bid_price,bid_qty=best_bid_qty,ask_price=best_ask_price,ask_qty=best_ask_qty,"
    "recv_time=local_recv_ns",
    header=True,
)
BOOKTICKER_FUTURES_CAPTURE = _layout(  # shared/data/binance/bookticker/*-um-*, *-cm-*
    "bookticker",
    "book",
    "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time,local_recv_ns",
    "update_id,bid_price=best_bid_price,bid_qty=best_bid_qty,ask_price=best_ask_price,ask_qty=best_ask_qty,"
    "event_time,recv_time=local_recv_ns",
    header=True,
)
BOOKTICKER_ARCHIVE = _layout(  # futures bookTicker as published on data.binance.vision
    "bookticker",
    "book",
    "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time",
    "update_id,bid_price=best_bid_price,bid_qty=best_bid_qty,ask_price=best_ask_price,ask_qty=best_ask_qty,event_time",
    header=True,
)
KLINES = _layout(
    "klines",
    "kline",
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore",
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume",
    header=False,
)

CSV_LAYOUTS: tuple[CsvLayout, ...] = (
    SPOT_TRADES,
    UM_TRADES,
    CM_TRADES,
    CM_TRADES_ARCHIVE,
    SPOT_AGGTRADES,
    UM_AGGTRADES,
    BOOKTICKER_SPOT_CAPTURE,
    BOOKTICKER_FUTURES_CAPTURE,
    BOOKTICKER_ARCHIVE,
    KLINES,
)


def layout_for_header(header: Sequence[str]) -> CsvLayout | None:
    """The layout whose columns are exactly ``header`` (or, failing that, all present in it)."""
    names = [h.strip() for h in header]
    for lay in CSV_LAYOUTS:
        if list(lay.columns) == names:
            return lay
    have = set(names)
    for lay in CSV_LAYOUTS:
        if set(lay.columns) == have:
            return lay
    for lay in CSV_LAYOUTS:
        if {c for _, c in lay.fields} <= have:
            return lay
    return None


def _is_int(s: str) -> bool:
    return s.strip().isdigit()


def _is_bool(s: str) -> bool:
    return s.strip().lower() in ("true", "false")


def layout_for_row(row: Sequence[str]) -> CsvLayout | None:
    """The layout of a header-less file from its first data row (field count and shapes)."""
    n = len(row)
    if n == 0 or not _is_int(row[0]):
        return None
    if n == 7 and _is_bool(row[5]) and _is_bool(row[6]):
        return SPOT_TRADES
    if n == 7 and _is_int(row[5]) and _is_bool(row[6]):
        return UM_AGGTRADES
    if n == 7 and _is_int(row[5]) and _is_int(row[6]):
        return BOOKTICKER_ARCHIVE
    if n == 8 and _is_int(row[5]) and _is_bool(row[6]):
        return SPOT_AGGTRADES
    if n == 6 and _is_int(row[4]) and _is_bool(row[5]):
        return UM_TRADES
    if n == 5 and _is_int(row[3]) and _is_bool(row[4]):
        return CM_TRADES
    if n == 12 and _is_int(row[6]):
        return KLINES
    return None


def _csv_value(kind: FieldKind, col: str, s: str) -> Any:
    """One CSV field parsed (not checked: the value rules come after, on the whole row)."""
    if kind in ("int", "time"):
        try:
            v = int(s)
        except ValueError:
            raise BadMessage(f"{col} is not an integer: {short_repr(s)}") from None
        if not MIN_INT64 <= v <= MAX_INT64:
            raise BadMessage(f"{col} is out of range: {short_repr(s)}")
        return to_ms(v) if kind == "time" else v
    if kind == "bool":
        t = s.strip().lower()
        if t not in ("true", "false"):
            raise BadMessage(f"{col} is not true/false: {short_repr(s)}")
        return t == "true"
    try:
        return float(s)
    except ValueError:
        raise BadMessage(f"{col} is not a number: {short_repr(s)}") from None


def rule_columns(kind: Literal["trade", "book", "kline"], values: Mapping[str, Any]) -> dict[str, Any]:
    """CSV output fields (columns or scalars) under the names of :mod:`rtqis.schemas.rows` (a trade's
    ``time`` is its ``trade_time``), to be checked with :func:`~rtqis.schemas.rows.check_columns`."""
    if kind == "trade":
        return {("trade_time" if k == "time" else k): v for k, v in values.items()}
    return dict(values)


def parse_csv_fields(
    layout: CsvLayout, row: Sequence[str], index: Mapping[str, int] | None = None, width: int | None = None
) -> tuple[Any, ...]:
    """One CSV row parsed into ``layout.out_fields`` order, without the value rules (see
    :func:`parse_csv_row`); raise :class:`BadMessage` if a field is not a number, integer or flag."""
    idx = index if index is not None else layout.index()
    n = width if width is not None else layout.width
    if len(row) != n:
        names = f" ({','.join(layout.columns)})" if n == layout.width else ""
        raise BadMessage(f"expected {n} fields{names}, got {len(row)}")
    cols = dict(layout.fields)
    return tuple(_csv_value(FIELD_KINDS[f], cols[f], row[idx[f]]) for f in layout.out_fields)


def parse_csv_row(
    layout: CsvLayout, row: Sequence[str], index: Mapping[str, int] | None = None, width: int | None = None
) -> tuple[Any, ...]:
    """One CSV row as a tuple in ``layout.out_fields`` order; raise :class:`BadMessage` if unusable.

    ``index`` maps output fields to positions (from :meth:`CsvLayout.index` of the file's header) and
    ``width`` is the file's field count; by default the layout's own columns. Times are normalised to
    ms; then the value rules of :mod:`rtqis.schemas.rows` (the reason is theirs).
    """
    out = parse_csv_fields(layout, row, index, width)
    check_row(layout.kind, rule_columns(layout.kind, dict(zip(layout.out_fields, out, strict=True))))
    return out
