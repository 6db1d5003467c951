"""Pure analytics kernels (numpy maths, no I/O): candles in :mod:`.candles`, pair analytics in :mod:`.pairs`."""

from rtqis.analytics.pairs import (
    VALUE_LIMIT,
    AdfResult,
    HuberFairValue,
    KalmanHedge,
    KalmanResult,
    RollingOLS,
    RollingZScore,
    adf_test,
    huber_fit,
    kalman_hedge,
    rolling_ols,
    zscore,
)

__all__ = [
    "VALUE_LIMIT",
    "AdfResult",
    "HuberFairValue",
    "KalmanHedge",
    "KalmanResult",
    "RollingOLS",
    "RollingZScore",
    "adf_test",
    "huber_fit",
    "kalman_hedge",
    "rolling_ols",
    "zscore",
]
