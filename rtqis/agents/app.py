"""The Faust app: configured for the broker it runs on, with every agent registered.

Dataflow (the whole pipeline in one place)::

    ticks.trade (TradeFrame) --last_trade agent--> table last_trade --> analytics.ticker (Ticker)
                                   \\--> deadletter (DeadLetter: undecodable frames, invalid rows)

Settings that matter on the embedded broker (measured, see bench/README.md):
- table recovery reads each changelog to its true end, probed with a fetch, when the broker's end
  offsets fail the self-check at start (``RTQIS_RECOVERY_FIX``);
- consumer fetch wait = ``RTQIS_FETCH_MAX_WAIT_MS`` (Faust hard-codes 1,500 ms; the broker holds each
  fetch that long even when data is there).
- rebalance/session timeouts of a few seconds (the group join waits for the rebalance timeout).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

import faust
import numpy as np
from faust.transport.drivers import aiokafka as faust_aiokafka

from rtqis.errors import DecodeError
from rtqis.kafka.offsets import broker_capabilities, true_end_offsets
from rtqis.schemas import models as m
from rtqis.schemas.codec import decode as decode_message
from rtqis.schemas.codec import encode
from rtqis.schemas.frames import Frame, validate_trade_frame
from rtqis.settings import Settings
from rtqis.topics import DEADLETTER, TICKER, TRADES
from rtqis.topics.registry import app_id

__all__ = ["RtqisApp", "create_app"]

log = logging.getLogger(__name__)


def _patch_fetch_wait(ms: int) -> None:
    """Make Faust's worker consumer use our fetch wait instead of its hard-coded 1,500 ms."""
    cls = faust_aiokafka.AIOKafkaConsumerThread
    original = getattr(cls, "_rtqis_original_create", None) or cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms  # read by aiokafka when the fetcher starts
        return consumer

    cls._rtqis_original_create = original  # type: ignore[attr-defined]
    cls._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]


def _credentials(settings: Settings) -> Any:
    if settings.security_protocol == "PLAINTEXT":
        return None
    ctx = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            ctx.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    if settings.security_protocol.startswith("SASL"):
        pw = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        return faust.SASLCredentials(
            username=settings.sasl_username, password=pw, ssl_context=ctx, mechanism=settings.sasl_mechanism
        )
    return ctx


class RtqisApp(faust.App):
    """faust.App with the RT-QIS settings object and counters attached."""

    rtqis: Settings
    dead_letters: int
    recovery_fix: str


def create_app(settings: Settings, *, exact_end_offsets: bool | None = None) -> RtqisApp:
    """The Faust app for ``settings`` with all agents registered.

    ``exact_end_offsets`` skips the broker self-check when the caller already knows the answer.
    """
    fix = settings.recovery_fix
    if fix == "auto":
        if exact_end_offsets is None:
            exact_end_offsets = broker_capabilities(settings).exact_end_offsets
        fix = "off" if exact_end_offsets else "end-offsets"
    _patch_fetch_wait(settings.fetch_max_wait_ms)
    _patch_recovery_highwaters(settings if fix == "end-offsets" else None)
    ns = settings.namespace
    conf: dict[str, Any] = {
        "broker": f"kafka://{settings.bootstrap.replace(',', ';kafka://')}",
        "store": "memory://",
        "topic_partitions": settings.partitions,
        "topic_allow_declare": True,
        # the group join waits for the rebalance timeout: keep it short (measured ~4.5 s to Ready)
        "broker_rebalance_timeout": 5.0,
        "broker_session_timeout": 5.0,
        "broker_heartbeat_interval": 1.0,
        "broker_commit_interval": 1.0,
        "web_port": settings.worker_web_port,
        "web_bind": "127.0.0.1",
        "web_enabled": False,
        "producer_compression_type": None if settings.compression == "none" else settings.compression,
        "producer_linger_ms": 1,
        "consumer_auto_offset_reset": "earliest",
        "table_cleanup_interval": 30.0,
    }
    if fix == "batch1":
        # every changelog record its own batch: the broker's "base offset of the last batch + 1" is
        # then exact (costs a round trip per table write and ~1.8 KB of broker memory per record)
        conf["producer_max_batch_size"] = 1
    creds = _credentials(settings)
    if creds is not None:
        conf["broker_credentials"] = creds
    app = RtqisApp(app_id(ns), **conf)
    app.rtqis = settings
    app.dead_letters = 0
    app.recovery_fix = fix
    log.info("recovery fix: %s; fetch wait %d ms", fix, settings.fetch_max_wait_ms)
    _register(app, settings)
    return app


def _patch_recovery_highwaters(settings: Settings | None) -> None:
    """Make Faust's table recovery read changelogs to their true end (``settings=None`` undoes it).

    Faust asks the broker for each changelog partition's end offset and replays up to it; on a broker
    that understates it (Tansu: base offset of the last batch + 1) the last records of a batch would
    be skipped. The true end comes from :func:`rtqis.kafka.offsets.true_end_offsets` (a fetch).
    """
    cls = faust_aiokafka.AIOKafkaConsumerThread
    original = getattr(cls, "_rtqis_original_highwaters", None) or cls._highwaters
    cls._rtqis_original_highwaters = original  # type: ignore[attr-defined]
    if settings is None:
        cls._highwaters = original  # type: ignore[method-assign]
        return

    async def _highwaters(self: Any, partitions: Any) -> Any:
        reported = await original(self, partitions)
        if self.consumer.in_transaction or not reported:
            return reported
        loop = asyncio.get_running_loop()
        keys = [(tp.topic, tp.partition) for tp in reported]
        true = await loop.run_in_executor(None, true_end_offsets, settings, keys)
        fixed = {tp: max(v, true[(tp.topic, tp.partition)]) for tp, v in reported.items()}
        if fixed != dict(reported):
            log.info("changelog end offsets corrected from the broker's %s to %s", dict(reported), fixed)
        return fixed

    cls._highwaters = _highwaters  # type: ignore[method-assign]


def _register(app: RtqisApp, settings: Settings) -> None:
    ns = settings.namespace
    trades = app.topic(TRADES.full_name(ns), value_serializer="raw", key_serializer="raw")
    ticker = app.topic(TICKER.full_name(ns), value_serializer="raw", key_serializer="raw")
    deadletter = app.topic(DEADLETTER.full_name(ns), value_serializer="raw", key_serializer="raw")
    last_trade = app.Table("last_trade", default=dict, partitions=settings.partitions)
    codec = settings.codec

    async def dead_letter(event: Any, reason: str, payload: bytes, stage: str) -> None:
        app.dead_letters += 1
        msg = event.message
        key = msg.key.decode("utf-8", "replace") if isinstance(msg.key, bytes) else msg.key
        dl = m.DeadLetter(
            time=int(time.time() * 1000),
            stage=stage,
            reason=reason,
            source_topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=key,
            payload=payload,
        )
        value, headers = encode(dl, codec)
        await deadletter.send(key=stage.encode(), value=value, headers=headers)
        log.warning(
            "dead-lettered %s[%s]@%s: %s (total %d)", msg.topic, msg.partition, msg.offset, reason, app.dead_letters
        )

    @app.agent(trades, name="last_trade")
    async def last_trade_agent(stream: Any) -> None:
        """Last trade and counts per symbol. Idempotent: rows with trade ids already applied are skipped,
        so a redelivered frame (at-least-once after a crash) changes nothing."""
        async for event in stream.events():
            try:
                frame = decode_message(event.value, event.headers, TRADES.value_schema)
                if not isinstance(frame, Frame):
                    raise DecodeError(f"expected a TradeFrame, got {type(frame).__name__}")
            except DecodeError as e:
                await dead_letter(event, str(e), event.value or b"", "worker.last_trade")
                continue
            good, bad = validate_trade_frame(frame)
            if bad:
                reasons = "; ".join(f"row {i}: {r}" for i, r in bad[:10])
                await dead_letter(event, f"{len(bad)} invalid rows: {reasons}", event.value, "worker.last_trade")
                frame = frame.take(good)
                if not len(frame):
                    continue
            state = last_trade[frame.symbol]
            ids = frame.cols["trade_id"]
            assert ids is not None
            fresh = ids > state.get("trade_id", -1)
            n = int(fresh.sum())
            if n == 0:
                continue
            i = int(np.flatnonzero(fresh)[-1])
            new = {
                "trade_id": int(ids[i]),
                "price": float(frame.cols["price"][i]),  # type: ignore[index]
                "event_time": int(frame.cols["event_time"][i]),  # type: ignore[index]
                "trades": state.get("trades", 0) + n,
                "frames": state.get("frames", 0) + 1,
            }
            last_trade[frame.symbol] = new
            out = m.Ticker(symbol=frame.symbol, **new)
            value, headers = encode(out, codec)
            await ticker.send(key=frame.symbol.encode(), value=value, headers=headers)
