"""Print the messages of any topic as they arrive, decoded; frames print one tick per line."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from confluent_kafka import TopicPartition

from rtqis.errors import DecodeError, RtqisError
from rtqis.kafka.clients import new_consumer
from rtqis.kafka.offsets import topic_offsets
from rtqis.schemas.codec import decode
from rtqis.schemas.frames import Frame
from rtqis.settings import Settings
from rtqis.topics import by_name

__all__ = ["iter_rows", "resolve_topic", "tail"]

_TIME_FIELDS = ("event_time", "time", "open_time", "trade_time", "recv_time")


def resolve_topic(settings: Settings, topic: str) -> tuple[str, str | None]:
    """(full topic name, default value schema) of a short or full topic name."""
    spec = by_name(topic, settings.namespace)
    if spec is not None and not topic.startswith("replay."):
        return spec.full_name(settings.namespace), spec.value_schema
    return topic, spec.value_schema if spec else None


def iter_rows(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool = False,
    from_time_ms: int | None = None,
    until_end: bool = False,
    stop: threading.Event | None = None,
    errors: list[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Decoded rows of ``topic`` (one per tick for frames). Undecodable messages go to ``errors``."""
    full, schema = resolve_topic(settings, topic)
    offsets = topic_offsets(settings, [full], at_time_ms=from_time_ms)
    ends = {r.partition: r.end for r in offsets}
    if from_time_ms is not None:
        # at_time is set on every row when at_time_ms is given; the end stands for "no record from then on"
        start = {r.partition: r.end if r.at_time is None else r.at_time for r in offsets}
    elif from_beginning:
        start = {r.partition: r.earliest for r in offsets}
    else:
        start = dict(ends)
    pending = {p for p in ends if start[p] < ends[p]} if until_end else set(ends)
    if until_end and not pending:
        return
    c = new_consumer(settings)
    c.assign([TopicPartition(full, p, start[p]) for p in ends])
    try:
        while not (stop and stop.is_set()):
            msg = c.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if errors is not None:
                    errors.append(str(msg.error()))
                continue
            try:
                obj = decode(msg.value(), msg.headers(), schema)
            except DecodeError as e:
                if errors is not None:
                    errors.append(f"{full}[{msg.partition()}]@{msg.offset()}: {e}")
                obj = None
            if isinstance(obj, Frame):
                yield from obj.iter_rows()
            elif obj is not None:
                yield obj.model_dump()
            partition, offset = msg.partition(), msg.offset()
            if until_end and partition is not None and offset is not None and offset + 1 >= ends[partition]:
                pending.discard(partition)
                if not pending:
                    return
    finally:
        c.close()


def _fmt_time(ms: Any) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_row(row: dict[str, Any]) -> str:
    """One human-readable line: time first, then the other fields."""
    parts = []
    for f in _TIME_FIELDS:
        if isinstance(row.get(f), int):
            parts.append(_fmt_time(row[f]))
            break
    for k, v in row.items():
        if isinstance(v, bytes):
            v = v[:80].decode("utf-8", "replace")
        elif isinstance(v, float):
            v = f"{v:.10g}"
        parts.append(f"{k}={v}")
    return " ".join(parts)


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return base64.b64encode(o).decode()
    raise TypeError


def tail(
    settings: Settings,
    topic: str,
    out: TextIO,
    err: TextIO,
    *,
    from_beginning: bool = False,
    from_time_ms: int | None = None,
    limit: int | None = None,
    as_json: bool = False,
    until_end: bool = False,
    stop: threading.Event | None = None,
) -> int:
    """Write decoded rows to ``out``; returns how many rows were printed."""
    if limit is not None and limit <= 0:
        raise RtqisError("--limit must be a positive number")
    errors: list[str] = []
    n = 0
    for row in iter_rows(
        settings,
        topic,
        from_beginning=from_beginning,
        from_time_ms=from_time_ms,
        until_end=until_end,
        stop=stop,
        errors=errors,
    ):
        while errors:
            print(f"! {errors.pop(0)}", file=err)
        line = orjson.dumps(row, default=_json_default).decode() if as_json else format_row(row)
        print(line, file=out, flush=True)
        n += 1
        if limit is not None and n >= limit:
            break
    for e in errors:
        print(f"! {e}", file=err)
    return n
