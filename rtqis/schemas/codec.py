"""Wire codec: JSON (orjson) or Avro binary (fastavro), chosen per message, named in Kafka headers.

Every message carries three headers: ``rtqis-schema`` (e.g. ``rtqis.TradeFrame``), ``rtqis-version``
and ``content-type`` (``application/json`` or ``application/avro``). Consumers decode by the headers,
so both codecs can share a topic and schemas can evolve. Messages from foreign producers without
headers are read as JSON of the topic's declared schema.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal, NamedTuple

import fastavro
import numpy as np
import orjson
from pydantic import ValidationError

from rtqis.errors import DecodeError, SchemaError
from rtqis.schemas import models as m
from rtqis.schemas.frames import Frame
from rtqis.schemas.registry import FRAME_TYPES, MODELS, derive_frame_schema, load_avsc, schema_version

__all__ = ["CONTENT_TYPES", "Encoded", "decode", "encode", "header_map"]

Headers = list[tuple[str, bytes]]
CodecName = Literal["json", "avro"]
CONTENT_TYPES: dict[str, CodecName] = {"application/json": "json", "application/avro": "avro"}
_CT = {"json": b"application/json", "avro": b"application/avro"}
H_SCHEMA, H_VERSION, H_CT = "rtqis-schema", "rtqis-version", "content-type"


class Encoded(NamedTuple):
    value: bytes
    headers: Headers


@cache
def _parsed(name: str) -> Any:
    if name in FRAME_TYPES:
        row = FRAME_TYPES[name].row.schema_name
        return fastavro.parse_schema(derive_frame_schema(load_avsc(row)))
    return fastavro.parse_schema(load_avsc(name))


@cache
def _headers(name: str, codec: CodecName) -> tuple[tuple[str, bytes], ...]:
    version = schema_version(FRAME_TYPES[name].row.schema_name if name in FRAME_TYPES else name)
    return ((H_SCHEMA, name.encode()), (H_VERSION, str(version).encode()), (H_CT, _CT[codec]))


def encode(obj: m.Message | Frame, codec: CodecName = "json") -> Encoded:
    """Bytes and headers of a model or a frame."""
    if isinstance(obj, Frame):
        name = obj.schema_name
        if codec == "json":
            value = orjson.dumps(obj.to_wire(), option=orjson.OPT_SERIALIZE_NUMPY)
        else:
            record = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obj.to_wire().items()}
            value = _avro_bytes(name, record)
    else:
        name = obj.schema_name
        if codec == "json":
            value = obj.__pydantic_serializer__.to_json(obj)
        else:
            value = _avro_bytes(name, obj.model_dump())
    return Encoded(value, list(_headers(name, codec)))


def _avro_bytes(name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, _parsed(name), record)
    except (ValueError, TypeError) as e:
        raise SchemaError(f"{name}: cannot encode as Avro: {e}") from None
    return buf.getvalue()


def header_map(headers: Any) -> dict[str, str]:
    """Kafka headers (list of pairs, any client) as a dict of str."""
    out: dict[str, str] = {}
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for k, v in items:
        if isinstance(v, bytes | bytearray | memoryview):
            out[k] = bytes(v).decode("utf-8", "replace")
        elif v is not None:
            out[k] = str(v)
    return out


def decode(value: bytes | None, headers: Any = None, default_schema: str | None = None) -> m.Message | Frame:
    """A model or frame from bytes; raise :class:`DecodeError` with a readable reason if impossible."""
    if value is None:
        raise DecodeError("empty message (null value)")
    h = header_map(headers)
    name = h.get(H_SCHEMA) or default_schema
    if not name:
        raise DecodeError("no rtqis-schema header and no default schema for this topic")
    codec = CONTENT_TYPES.get(h.get(H_CT, "application/json"))
    if codec is None:
        raise DecodeError(f"unknown content-type {h.get(H_CT)!r}")
    version = h.get(H_VERSION)
    if name in FRAME_TYPES:
        ftype = FRAME_TYPES[name]
        _check_version(name, ftype.row.schema_name, version)
        raw = _load(name, value, codec)
        if not isinstance(raw, dict):
            raise DecodeError(f"{name}: expected an object, got {type(raw).__name__}")
        symbol = raw.pop("symbol", None)
        try:
            return Frame.build(ftype, symbol, raw)
        except SchemaError as e:
            raise DecodeError(str(e)) from None
    model = MODELS.get(name)
    if model is None:
        raise DecodeError(f"unknown schema {name!r}")
    _check_version(name, name, version)
    try:
        if codec == "json":
            return model.model_validate_json(value)
        return model.model_validate(_load(name, value, codec))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DecodeError(f"{name}: {where}: {first['msg']}") from None


def _check_version(name: str, schema: str, version: str | None) -> None:
    if version is not None and version != str(schema_version(schema)):
        shown = version if version.isprintable() else repr(version)  # a header is untrusted: keep one line
        raise DecodeError(f"{name}: unsupported version {shown} (this build reads {schema_version(schema)})")


def _load(name: str, value: bytes, codec: CodecName) -> Any:
    try:
        if codec == "json":
            return orjson.loads(value)
        return fastavro.schemaless_reader(io.BytesIO(value), _parsed(name), None)
    except (orjson.JSONDecodeError, EOFError, ValueError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise DecodeError(f"{name}: not valid {codec}: {e}") from None
