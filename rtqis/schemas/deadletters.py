"""A bounded :class:`~rtqis.schemas.models.DeadLetter`: what every consumer (the worker's agents, the sink)
sends to ``deadletter`` when it rejects a message, whatever that message holds.

A rejected message can be anything: 5 MB of random bytes, an 80,000-row frame, a key or symbol of a
megabyte. Dead-lettered whole it would break the broker's message size limit (1 MB by default) and
crash the consumer on every restart (a poison pill). So the payload is kept whole only up to
:data:`MAX_WHOLE_PAYLOAD` bytes; a larger one is replaced by its first :data:`EXCERPT_BYTES` bytes
(``payload_size`` keeps the real size, the reason says it was cut), and the reason and key are cut
to :data:`MAX_TEXT` characters. A dead letter is at most ~70 KB on the wire (JSON: base64 payload).
"""

from __future__ import annotations

import time

from rtqis.schemas import models as m

__all__ = ["EXCERPT_BYTES", "MAX_TEXT", "MAX_WHOLE_PAYLOAD", "bounded_dead_letter"]

MAX_WHOLE_PAYLOAD = 48 * 1024
"""The largest payload (bytes) dead-lettered whole."""

EXCERPT_BYTES = 4 * 1024
"""How much (bytes, from the start) of a larger payload is kept."""

MAX_TEXT = 4 * 1024
"""The longest reason or key (characters) kept."""


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT:
        return text
    return f"{text[:MAX_TEXT]}... ({len(text)} characters)"


def bounded_dead_letter(
    stage: str,
    reason: str,
    payload: bytes | bytearray | memoryview | None,
    *,
    source_topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | str | None = None,
    location: str | None = None,
    now_ms: int | None = None,
) -> m.DeadLetter:
    """The dead letter of a rejected ``payload`` (None: an empty one), bounded in size whatever it holds:
    a payload over :data:`MAX_WHOLE_PAYLOAD` bytes becomes its first :data:`EXCERPT_BYTES` bytes, and the
    reason says so; ``payload_size`` is always the real size (bytes). A bytes ``key`` is decoded as
    UTF-8 (invalid bytes replaced). ``now_ms``: the time stamp (epoch ms; default now)."""
    raw = bytes(payload) if payload is not None else b""
    size = len(raw)
    if size > MAX_WHOLE_PAYLOAD:
        raw = raw[:EXCERPT_BYTES]
        reason = f"{_cut(reason)} [payload of {size} bytes: first {EXCERPT_BYTES} bytes kept]"
    else:
        reason = str(_cut(reason))
    text_key = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    return m.DeadLetter(
        time=int(time.time() * 1000) if now_ms is None else now_ms,
        stage=stage,
        reason=reason,
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key=_cut(text_key),
        location=_cut(location),
        payload=raw,
        payload_size=size,
    )
