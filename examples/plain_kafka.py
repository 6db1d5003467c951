#!/usr/bin/env python
"""Read an RT-QIS topic with plain confluent-kafka and fastavro: no rtqis import, only the published
``.avsc`` files (``rtqis/schemas/*.avsc``) and the documented wire format.

The wire format (``rtqis/schemas/codec.py``): every message carries the headers ``rtqis-schema``
(e.g. ``rtqis.PairSignal``), ``rtqis-version`` and ``content-type``. ``application/json`` values are
UTF-8 JSON objects with the schema's field names (``bytes`` fields in base64); ``application/avro``
values are schemaless Avro binary (no magic byte, no registry id) written with the ``.avsc`` named by
``rtqis-schema``. Replay topics are ``replay.<namespace>.<topic>``. Keys are UTF-8 (symbol or pair).

    python examples/plain_kafka.py --topic analytics.pair                     # live, from now on
    python examples/plain_kafka.py --topic alerts --from-beginning --namespace day1 --limit 10

Differences from :mod:`rtqis.client` worth knowing: ``--from-time`` uses the broker's own time lookup
(``offsets_for_times``), which the embedded broker answers with offset 0 (so it reads from the start
there; ``rtqis.client`` searches the record timestamps instead), and "latest" here is the broker's
end offset, which the embedded broker reports a little short (a few old records may come first).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

__all__ = ["Decoder", "main", "read"]

SCHEMAS = Path(__file__).resolve().parent.parent / "rtqis" / "schemas"


class Decoder:
    """Decodes values by their headers with the ``.avsc`` files of a folder (parsed once each)."""

    def __init__(self, schemas_dir: Path = SCHEMAS) -> None:
        self.dir = schemas_dir
        self._parsed: dict[str, Any] = {}

    def schema(self, name: str) -> Any:
        if name not in self._parsed:
            short = name.rsplit(".", 1)[-1]  # rtqis.PairSignal -> PairSignal.avsc
            with (self.dir / f"{short}.avsc").open() as f:
                self._parsed[name] = fastavro.parse_schema(json.load(f))
        return self._parsed[name]

    def decode(self, value: bytes, headers: Any) -> tuple[str, dict[str, Any]]:
        """(schema name, record) of one message (``headers``: confluent-kafka's list of pairs)."""
        h = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in headers or [] if v is not None}
        name = h.get("rtqis-schema", "?")
        if h.get("content-type") == "application/avro":
            record = fastavro.schemaless_reader(io.BytesIO(value), self.schema(name), None)
        else:
            record = json.loads(value)
        if not isinstance(record, dict):
            raise ValueError(f"{name}: not a record: {record!r:.80}")
        return name, record


def read(
    bootstrap: str,
    topic: str,
    *,
    namespace: str = "",
    from_beginning: bool = False,
    from_time_ms: int | None = None,
    group: str | None = None,
    limit: int | None = None,
    idle_timeout_s: float | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(schema name, record) of each message of ``topic``; stops after ``limit`` messages or
    ``idle_timeout_s`` seconds without one. With ``group``, offsets are stored after each record is
    handed out and committed by librdkafka (at least once)."""
    full = f"replay.{namespace}.{topic}" if namespace else topic
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or "plain-kafka-example",
            "enable.auto.commit": group is not None,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "session.timeout.ms": 6000,  # the embedded broker holds a join for about this long
        }
    )
    dec = Decoder()
    try:
        parts = sorted(c.list_topics(full, timeout=10).topics[full].partitions)
        if group is not None:
            c.subscribe([full])
        elif from_time_ms is not None:
            c.assign(c.offsets_for_times([TopicPartition(full, p, from_time_ms) for p in parts], timeout=10))
        else:
            c.assign([TopicPartition(full, p, OFFSET_BEGINNING if from_beginning else OFFSET_END) for p in parts])
        n, idle = 0, 0.0
        while limit is None or n < limit:
            msg = c.poll(0.5)
            if msg is None:
                idle += 0.5
                if idle_timeout_s is not None and idle >= idle_timeout_s:
                    return
                continue
            idle = 0.0
            if msg.error():
                print(f"! {msg.error()}", file=sys.stderr)  # noqa: T201  (a script's output)
                continue
            value = msg.value()
            if value is None:
                continue
            try:
                yield dec.decode(value, msg.headers())
            except (ValueError, KeyError, EOFError, OSError) as e:  # a bad message: say so, go on
                print(f"! {full}[{msg.partition()}]@{msg.offset()}: {e}", file=sys.stderr)  # noqa: T201
            if group is not None:
                c.store_offsets(msg)
            n += 1
    finally:
        c.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092", help="broker address (default: rtqis up's)")
    ap.add_argument("--topic", default="analytics.pair", help="registry topic name (default analytics.pair)")
    ap.add_argument("--namespace", default="", help="replay namespace (default: live topics)")
    ap.add_argument("--from-beginning", action="store_true", help="read what the topic holds, then new messages")
    ap.add_argument("--from-time", type=int, default=None, help="epoch ms: the broker's own time lookup")
    ap.add_argument("--group", default=None, help="consumer group (commits offsets; resumes on restart)")
    ap.add_argument("--limit", type=int, default=None, help="stop after this many messages")
    ap.add_argument("--idle-timeout", type=float, default=None, help="stop after this many seconds of silence")
    a = ap.parse_args(argv)
    try:
        for name, record in read(
            a.bootstrap,
            a.topic,
            namespace=a.namespace,
            from_beginning=a.from_beginning,
            from_time_ms=a.from_time,
            group=a.group,
            limit=a.limit,
            idle_timeout_s=a.idle_timeout,
        ):
            print(name, json.dumps(record, default=str), flush=True)  # noqa: T201  (a script's output)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
