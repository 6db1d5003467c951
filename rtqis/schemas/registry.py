"""Schema registry of the package: ``.avsc`` files, their Pydantic models and the frame types.

A *frame* carries many rows of one symbol in columns (``TradeFrame`` = many ``Trade`` rows). Its schema
is derived from the row schema (each field but ``symbol`` becomes an array), and the derived schema
is also published as ``<Row>Frame.avsc`` so that any Kafka client can read frames without RT-QIS.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from rtqis.schemas import models as m

__all__ = [
    "FRAME_TYPES",
    "MODELS",
    "SCHEMA_DIR",
    "FrameType",
    "derive_frame_schema",
    "load_avsc",
    "schema_version",
]

SCHEMA_DIR = Path(__file__).parent

MODELS: dict[str, type[m.Message]] = {
    cls.schema_name: cls
    for cls in (
        m.Trade,
        m.BookTicker,
        m.DepthSnapshot,
        m.Candle,
        m.PairSignal,
        m.AdfResult,
        m.Alert,
        m.DeadLetter,
        m.Ticker,
        m.LegSamples,
    )
}

_AVRO_DTYPES = {"long": np.int64, "int": np.int32, "double": np.float64, "float": np.float32, "boolean": np.bool_}


@cache
def load_avsc(full_name: str) -> dict[str, Any]:
    """The schema ``rtqis.Name`` as JSON (a dict), read from ``Name.avsc``."""
    short = full_name.rsplit(".", 1)[-1]
    path = SCHEMA_DIR / f"{short}.avsc"
    with path.open() as f:
        schema: dict[str, Any] = json.load(f)
    return schema


def schema_version(full_name: str) -> int:
    return int(load_avsc(full_name).get("rtqis.version", 1))


def derive_frame_schema(row_schema: dict[str, Any], key: str = "symbol") -> dict[str, Any]:
    """Columnar frame schema of a row schema: ``key`` stays scalar, every other field an array.

    An optional scalar (``["null", T]``) becomes an optional array: the whole column is null or none
    of it is (spot book tickers carry no event time at all).
    """
    fields = []
    for f in row_schema["fields"]:
        f = copy.deepcopy(f)
        if f["name"] != key:
            t = f["type"]
            if isinstance(t, list):
                inner = [x for x in t if x != "null"]
                f["type"] = ["null", {"type": "array", "items": inner[0]}]
                f["default"] = None
            else:
                f["type"] = {"type": "array", "items": t}
                f.pop("default", None)
        fields.append(f)
    return {
        "type": "record",
        "name": row_schema["name"] + "Frame",
        "namespace": row_schema.get("namespace", "rtqis"),
        "doc": f"Many {row_schema['name']} rows of one {key}, in columns (arrays of equal length).",
        "rtqis.version": row_schema.get("rtqis.version", 1),
        "fields": fields,
    }


@dataclass(frozen=True)
class FrameType:
    """A frame schema: its name, row model, and the numpy dtype of each column."""

    name: str
    row: type[m.Message]
    dtypes: dict[str, Any]
    optional: frozenset[str]

    @classmethod
    def of(cls, row: type[m.Message]) -> FrameType:
        schema = derive_frame_schema(load_avsc(row.schema_name))
        dtypes: dict[str, Any] = {}
        optional = set()
        for f in schema["fields"]:
            if f["name"] == "symbol":
                continue
            t = f["type"]
            if isinstance(t, list):
                optional.add(f["name"])
                t = t[1]
            dtypes[f["name"]] = _AVRO_DTYPES[t["items"]]
        return cls(row.schema_name + "Frame", row, dtypes, frozenset(optional))


FRAME_TYPES: dict[str, FrameType] = {ft.name: ft for ft in (FrameType.of(m.Trade), FrameType.of(m.BookTicker))}
