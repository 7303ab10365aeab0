"""Crafted candle data in Freqtrade's layout, built to trigger one money rule at a time.

Prices follow a drift plus a regular wave, so MACD crosses (candidates) come every `period`
candles. Each scenario is a pure function of its parameters: the same data on every run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

START = datetime(2025, 6, 1, tzinfo=UTC)
STEP = timedelta(minutes=3)


def wave(
    n: int,
    *,
    base: float,
    drift: float,
    amplitude: float = 0.004,
    period: int = 24,
    crash_every: int | None = None,
    crash: float = 0.0,
    swing: float = 0.0,
    swing_period: int = 400,
) -> pd.DataFrame:
    """3m candles: exp drift x (1 + fast wave + slow swing), optional sharp drops every N candles.

    The slow swing makes price come back below earlier exits (re-entry scenarios).
    """
    t = np.arange(n, dtype=float)
    shape = amplitude * np.sin(2 * np.pi * t / period) + swing * np.sin(
        2 * np.pi * t / swing_period
    )
    close = base * np.exp(drift * t) * (1 + shape)
    if crash_every:
        # A one-candle drop that recovers over the next candles: stops get hit, trend survives.
        phase = np.arange(n) % crash_every
        dip = np.where(phase == crash_every - 1, crash, 0.0)
        close = close * (1 - dip)
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(close - open_) + base * 0.0004
    high = np.maximum(open_, close) + spread * 0.25
    low = np.minimum(open_, close) - spread * 0.25
    dates = pd.date_range(START, periods=n, freq="3min", tz="UTC")
    return pd.DataFrame(
        {"date": dates, "open": open_, "high": high, "low": low, "close": close, "volume": 1000.0}
    )


def write_pair(datadir: Path, base_coin: str, candles: pd.DataFrame) -> None:
    """Write a pair's 3m candles and the 1h mark candles Freqtrade's futures backtests need."""
    futures = datadir / "futures"
    futures.mkdir(parents=True, exist_ok=True)
    stem = f"{base_coin}_USDT_USDT"
    candles.reset_index(drop=True).to_feather(futures / f"{stem}-3m-futures.feather")
    mark = (
        candles.set_index("date")
        .resample("1h")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last"})
        .dropna()
        .reset_index()
    )
    mark["volume"] = float("nan")
    mark.to_feather(futures / f"{stem}-1h-mark.feather")


def timerange(candles: pd.DataFrame, startup: int = 1200) -> str:
    """A timerange (epoch seconds) that leaves the strategy its startup candles."""
    first = candles["date"].iloc[startup].to_pydatetime()
    last = candles["date"].iloc[-1].to_pydatetime()
    return f"{int(first.timestamp())}-{int(last.timestamp())}"
