"""Pydantic v2 models, one per Avro schema in this folder (``<Name>.avsc``).

They are written by hand on purpose: ``tests/test_schemas.py`` checks each model against its ``.avsc``
field by field (names, types, optionality), so neither can drift from the other. Times are epoch
milliseconds UTC; prices are float64 in quote currency.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "AdfResult",
    "Alert",
    "BookTicker",
    "Candle",
    "DeadLetter",
    "DepthSnapshot",
    "LegSamples",
    "Message",
    "PairSignal",
    "Ticker",
    "Trade",
]


class Message(BaseModel):
    """Base of every wire message: strict fields, schema name and version for evolution."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")
    schema_name: ClassVar[str]
    schema_version: ClassVar[int] = 1


def _positive_finite(v: float) -> float:
    if not math.isfinite(v) or v <= 0:
        raise ValueError("must be a finite number > 0")
    return v


class Trade(Message):
    schema_name = "rtqis.Trade"
    symbol: str
    trade_id: int
    price: float
    qty: float
    trade_time: int
    event_time: int
    recv_time: int
    buyer_maker: bool

    _pos = field_validator("price", "qty")(_positive_finite)


class BookTicker(Message):
    schema_name = "rtqis.BookTicker"
    symbol: str
    update_id: int
    bid_price: float
    bid_qty: float
    ask_price: float
    ask_qty: float
    event_time: int | None = None
    recv_time: int

    _pos = field_validator("bid_price", "ask_price")(_positive_finite)


class DepthSnapshot(Message):
    schema_name = "rtqis.DepthSnapshot"
    symbol: str
    last_update_id: int
    event_time: int | None = None
    recv_time: int
    bid_price: list[float]
    bid_qty: list[float]
    ask_price: list[float]
    ask_qty: list[float]


class Candle(Message):
    schema_name = "rtqis.Candle"
    symbol: str
    interval: str
    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int
    taker_buy_volume: float
    taker_buy_quote_volume: float
    vwap: float
    first_trade_id: int | None = None
    last_trade_id: int | None = None
    closed: bool = False
    correction: bool = False
    source: str = "stream"


class PairSignal(Message):
    schema_name = "rtqis.PairSignal"
    time: int
    pair: str
    x: float
    y: float
    ols_beta: float | None = None
    ols_alpha: float | None = None
    kalman_beta: float | None = None
    kalman_alpha: float | None = None
    spread: float | None = None
    spread_ols: float | None = None
    zscore: float | None = Field(
        None,
        description="trading z-score (since #20): how far the spread level log y - beta*log x is from its "
        "equilibrium, in standard deviations over ~60 of its half-lives; the alerts trade on it",
    )
    huber_beta: float | None = None
    huber_alpha: float | None = None
    fair_value: float | None = None
    n_obs: int
    flags: list[str] = []
    # added in #20 (optional: older messages decode with the defaults)
    innovation_z: float | None = Field(
        None,
        description="diagnostic: rolling z of the Kalman one-step prediction error (the zscore before #20)",
    )
    spread_bp: float | None = None
    spread_std_bp: float | None = None
    hedge: float | None = None
    hedge_se: float | None = None
    half_life_s: float | None = None
    half_life_se_s: float | None = None
    coint_stat: float | None = None
    coint_pvalue: float | None = None
    expected_reversion_bp: float | None = None
    round_trip_cost_bp: float | None = None
    coint: str | None = None
    position: int | None = None
    below_cost: int | None = None


class AdfResult(Message):
    schema_name = "rtqis.AdfResult"
    time: int
    pair: str
    window: int
    stat: float
    pvalue: float
    lags: int
    nobs: int
    crit_1: float
    crit_5: float
    crit_10: float
    regression: str
    mean_reverting: bool
    request_id: str | None = None


class Alert(Message):
    schema_name = "rtqis.Alert"
    time: int
    pair: str
    kind: str
    zscore: float
    threshold: float
    spread: float
    beta: float
    x: float
    y: float
    message: str
    # added in #20 (optional: older messages decode with the defaults)
    spread_bp: float | None = None
    expected_reversion_bp: float | None = None
    round_trip_cost_bp: float | None = None
    hedge: float | None = None
    fee_bps: float | None = None


class LegSamples(Message):
    schema_name = "rtqis.LegSamples"
    pair: str
    leg: Literal["x", "y"]
    symbol: str
    time: list[int]
    price: list[float]
    last_time: list[int]
    # added in #20: the quotes behind mid prices (None for trade prices)
    bid: list[float] | None = None
    ask: list[float] | None = None


class DeadLetter(Message):
    schema_name = "rtqis.DeadLetter"
    time: int
    stage: str
    reason: str
    source_topic: str | None = None
    partition: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None  # Avro int
    offset: int | None = None
    key: str | None = None
    location: str | None = None
    payload: bytes
    # added in #21 (optional: older messages decode with the default): the size of the rejected message
    # in bytes; larger than ``payload`` when only an excerpt was kept (rtqis.schemas.deadletters)
    payload_size: int | None = None


class Ticker(Message):
    schema_name = "rtqis.Ticker"
    symbol: str
    event_time: int
    price: float
    trade_id: int
    trades: int
    frames: int
