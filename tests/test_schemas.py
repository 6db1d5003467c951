"""Models agree with their .avsc files; both codecs round-trip every message type; bad bytes fail clearly."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtqis.errors import DecodeError
from rtqis.schemas import models as m
from rtqis.schemas.codec import decode, encode
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame, validate_book_frame, validate_trade_frame
from rtqis.schemas.registry import FRAME_TYPES, MODELS, SCHEMA_DIR, derive_frame_schema, load_avsc

AVRO_OF = {int: {"long", "int"}, float: {"double", "float"}, str: {"string"}, bool: {"boolean"}, bytes: {"bytes"}}


def _avro_types(py: Any) -> tuple[bool, set[str] | tuple[str, set[str]]]:
    """(optional, avro type names) of a Python annotation."""
    origin = typing.get_origin(py)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(py) if a is not type(None)]
        assert len(args) == 1
        return True, _avro_types(args[0])[1]
    if origin is list:
        (item,) = typing.get_args(py)
        return False, ("array", AVRO_OF[item])
    if origin is typing.Literal:  # an enumerated string
        return False, AVRO_OF[type(typing.get_args(py)[0])]
    return False, AVRO_OF[py]


def _schema_type(t: Any) -> tuple[bool, Any]:
    if isinstance(t, list):
        inner = [x for x in t if x != "null"]
        return "null" in t, _schema_type(inner[0])[1]
    if isinstance(t, dict) and t["type"] == "array":
        return False, ("array", t["items"])
    return False, t


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_matches_avsc_field_by_field(name: str) -> None:
    model = MODELS[name]
    schema = load_avsc(name)
    assert f"{schema['namespace']}.{schema['name']}" == name
    avsc_fields = [f["name"] for f in schema["fields"]]
    assert avsc_fields == list(model.model_fields), "same names in the same order"
    hints = typing.get_type_hints(model)
    for f in schema["fields"]:
        opt_py, py_types = _avro_types(hints[f["name"]])
        opt_avro, avro_t = _schema_type(f["type"])
        assert opt_py == opt_avro, f"{f['name']}: optionality differs"
        if isinstance(avro_t, tuple):
            assert isinstance(py_types, tuple) and avro_t[1] in py_types[1], f["name"]
        else:
            assert avro_t in py_types, f"{f['name']}: avro {avro_t} vs python {py_types}"
        field = model.model_fields[f["name"]]
        assert ("default" in f) == (not field.is_required()), f"{f['name']}: default presence differs"
        assert f.get("doc"), f"{f['name']}: every field is documented"


@pytest.mark.parametrize("frame", sorted(FRAME_TYPES))
def test_published_frame_schema_is_the_derived_one(frame: str) -> None:
    row = FRAME_TYPES[frame].row.schema_name
    shipped = json.loads((SCHEMA_DIR / f"{frame.split('.')[-1]}.avsc").read_text())
    assert shipped == derive_frame_schema(load_avsc(row))


def test_every_avsc_file_is_known() -> None:
    names = {f"rtqis.{p.stem}" for p in SCHEMA_DIR.glob("*.avsc")}
    assert names == set(MODELS) | set(FRAME_TYPES)


# --- round trips -----------------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
positive = st.floats(min_value=1e-8, max_value=1e7, allow_nan=False)
ms = st.integers(min_value=0, max_value=2**53)
text = st.text(max_size=20)


def _strategy(model: type[m.Message]) -> st.SearchStrategy[m.Message]:
    hints = typing.get_type_hints(model)
    kw: dict[str, st.SearchStrategy[Any]] = {}
    for name in model.model_fields:
        opt, t = _avro_types(hints[name])
        base: st.SearchStrategy[Any]
        if typing.get_origin(hints[name]) is typing.Literal:
            base = st.sampled_from(typing.get_args(hints[name]))
        elif isinstance(t, tuple):
            item = finite if "double" in t[1] else ms if "long" in t[1] else text
            base = st.lists(item, max_size=5)
        elif name == "window":
            base = st.integers(min_value=10, max_value=2**31)
        elif "double" in t:
            base = positive if name in ("price", "qty", "bid_price", "ask_price") else finite
        elif name == "partition":
            base = st.integers(min_value=0, max_value=2**31 - 1)
        elif "long" in t:
            base = ms
        elif "boolean" in t:
            base = st.booleans()
        elif "bytes" in t:
            base = st.binary(max_size=50)
        else:
            base = text
        kw[name] = st.one_of(st.none(), base) if opt else base
    return st.builds(model, **kw)


@pytest.mark.parametrize("codec", ["json", "avro"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_round_trips(name: str, codec: str) -> None:
    @settings(max_examples=40, deadline=None)
    @given(_strategy(MODELS[name]))
    def check(msg: m.Message) -> None:
        enc = encode(msg, codec)  # type: ignore[arg-type]
        headers = dict(enc.headers)
        assert headers["rtqis-schema"] == name.encode()
        assert headers["rtqis-version"] == b"1"
        assert decode(enc.value, enc.headers) == msg

    check()


def _trade_frame(n: int, seed: int = 0) -> Frame:
    rng = np.random.default_rng(seed)
    return Frame.build(
        TRADE_FRAME,
        "BTCUSDT",
        {
            "trade_id": np.arange(1, n + 1),
            "price": np.round(90_000 + rng.normal(0, 10, n), 2),
            "qty": np.round(rng.lognormal(-4, 1, n), 5) + 1e-5,
            "trade_time": 1_723_161_600_000 + np.arange(n),
            "event_time": 1_723_161_600_000 + np.arange(n),
            "recv_time": 1_723_161_600_001 + np.arange(n),
            "buyer_maker": rng.random(n) < 0.5,
        },
    )


@pytest.mark.parametrize("codec", ["json", "avro"])
def test_frames_round_trip_exactly(codec: str) -> None:
    f = _trade_frame(500)
    back = decode(*encode(f, codec))  # type: ignore[arg-type]
    assert isinstance(back, Frame) and back.symbol == "BTCUSDT" and back.type is TRADE_FRAME
    for k, v in f.cols.items():
        got = back.cols[k]
        assert got is not None and v is not None
        assert got.dtype == v.dtype and np.array_equal(got, v), k
    rows = back.models()
    assert len(rows) == 500 and all(isinstance(r, m.Trade) for r in rows)
    assert rows[7].price == float(f.cols["price"][7])  # type: ignore[index]


@pytest.mark.parametrize("codec", ["json", "avro"])
def test_book_frame_without_event_time(codec: str) -> None:
    rows = [
        m.BookTicker(
            symbol="ETHUSDT", update_id=i, bid_price=3000.0, bid_qty=1.0, ask_price=3000.01, ask_qty=2.0, recv_time=5
        )
        for i in range(3)
    ]
    f = Frame.from_rows(BOOK_FRAME, rows)
    assert f.cols["event_time"] is None
    assert decode(*encode(f, codec)).models() == rows  # type: ignore[arg-type, union-attr]


def test_json_frames_are_plain_documented_json() -> None:
    """Any Kafka client can read a frame: a JSON object with the symbol and one array per field."""
    enc = encode(_trade_frame(3))
    doc = json.loads(enc.value)
    assert doc["symbol"] == "BTCUSDT"
    assert set(doc) == {f["name"] for f in load_avsc("rtqis.TradeFrame")["fields"]}
    assert doc["trade_id"] == [1, 2, 3]


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"not json", [("rtqis-schema", b"rtqis.TradeFrame")], "not valid json"),
        (b"[1, 2]", [("rtqis-schema", b"rtqis.TradeFrame")], "expected an object"),
        (b'{"symbol": "X", "price": [1]}', [("rtqis-schema", b"rtqis.TradeFrame")], "missing columns"),
        (b"{}", [("rtqis-schema", b"rtqis.Nope")], "unknown schema"),
        (b"{}", [("rtqis-schema", b"rtqis.Trade"), ("rtqis-version", b"9")], "unsupported version"),
        (b"{}", [("rtqis-schema", b"rtqis.Trade"), ("content-type", b"text/xml")], "unknown content-type"),
        (b"{}", [], "no rtqis-schema header"),
        (None, [("rtqis-schema", b"rtqis.Trade")], "null value"),
        (b'{"symbol":"X","trade_id":1}', [("rtqis-schema", b"rtqis.Trade")], "rtqis.Trade: price"),
        (b"\x01\x02", [("rtqis-schema", b"rtqis.Candle"), ("content-type", b"application/avro")], "not valid avro"),
    ],
)
def test_bad_messages_fail_with_a_reason(value: bytes | None, headers: list[tuple[str, bytes]], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(value, headers)


def test_frame_columns_of_unequal_length_or_wrong_type_are_rejected() -> None:
    good = encode(_trade_frame(3))
    doc = json.loads(good.value)
    doc["price"] = doc["price"][:2]
    with pytest.raises(DecodeError, match="has 2 rows, expected 3"):
        decode(json.dumps(doc).encode(), good.headers)
    doc = json.loads(good.value)
    doc["trade_id"] = ["a", "b", "c"]
    with pytest.raises(DecodeError, match="trade_id"):
        decode(json.dumps(doc).encode(), good.headers)
    doc = json.loads(good.value)
    doc["trade_id"] = [1.5, 2, 3]
    with pytest.raises(DecodeError, match="not integers"):
        decode(json.dumps(doc).encode(), good.headers)


def test_split_cuts_a_frame_into_views_of_at_most_max_ticks() -> None:
    f = _trade_frame(10)
    parts = f.split(4)
    assert [len(p) for p in parts] == [4, 4, 2]
    assert np.concatenate([p.cols["trade_id"] for p in parts]).tolist() == f.cols["trade_id"].tolist()  # type: ignore[misc, union-attr]
    assert all(np.shares_memory(p.cols["price"], f.cols["price"]) for p in parts)  # type: ignore[arg-type]
    assert f.split(10) == [f] and f.split(None) == [f] and f.take(np.zeros(10, dtype=bool)).split(3) == []


def test_frame_validation_flags_each_bad_row_with_its_reason() -> None:
    f = _trade_frame(6)
    f.cols["price"][1] = -1.0  # type: ignore[index]
    f.cols["price"][2] = np.nan  # type: ignore[index]
    f.cols["qty"][4] = 0.0  # type: ignore[index]
    good, bad = validate_trade_frame(f)
    assert good.tolist() == [True, False, False, True, False, True]
    assert bad == [(1, "price <= 0"), (2, "price is not a finite number"), (4, "qty <= 0")]

    rows = [
        m.BookTicker(symbol="E", update_id=i, bid_price=b, bid_qty=1, ask_price=a, ask_qty=1, recv_time=1)
        for i, (b, a) in enumerate([(1.0, 2.0), (2.0, 2.0), (3.0, 2.5)])
    ]
    good, bad = validate_book_frame(Frame.from_rows(BOOK_FRAME, rows))
    assert good.tolist() == [True, False, False] and {r for _, r in bad} == {"crossed book: bid_price >= ask_price"}


def test_models_reject_non_positive_or_non_finite_prices() -> None:
    base = {
        "symbol": "X",
        "trade_id": 1,
        "qty": 1.0,
        "trade_time": 1,
        "event_time": 1,
        "recv_time": 1,
        "buyer_maker": True,
    }
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number > 0"):
            m.Trade(price=bad, **base)
