"""Small builders shared by the unit tests (real sample candles, real indicator code paths)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import talib

from llm_oracle.models import Candle, Fees, Indicators, OracleRequest, Position, Purpose, Side

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "user_data" / "data" / "bybit" / "futures"


def make_request(
    *,
    purpose: Purpose = Purpose.ENTRY,
    candidate: Side | None = Side.LONG,
    rsi: float = 55.0,
    macd_hist_pct: float = 0.01,
    ema200_pct: float = 0.8,
    close_shift: float = 0.0,
    position: Position | None = None,
) -> OracleRequest:
    candles = tuple(
        Candle(o=-0.1 * i + close_shift, h=0.05, l=-0.2, c=-0.05 * i, v=1.0 + i / 10)
        for i in range(8, 0, -1)
    )
    return OracleRequest(
        purpose=purpose,
        candidate=candidate,
        timeframe="3m",
        candles=candles,
        indicators=Indicators(
            rsi=rsi,
            macd_pct=0.02,
            macd_signal_pct=0.01,
            macd_hist_pct=macd_hist_pct,
            ema9_pct=0.05,
            ema21_pct=0.1,
            ema200_pct=ema200_pct,
            atr_pct=0.25,
            volume_ratio=1.3,
        ),
        position=position,
        fees=Fees(maker=0.0002, taker=0.00055),
    )


def indicator_frame(pair: str = "BTC", rows: int = 1500) -> pd.DataFrame:
    """Real sample candles with the strategy's indicator columns (same TA-Lib calls)."""
    df = pd.read_feather(DATA_DIR / f"{pair}_USDT_USDT-3m-futures.feather").iloc[:rows].copy()
    close = df["close"].to_numpy(dtype=float)
    df["ema9"] = talib.EMA(close, timeperiod=9)
    df["ema21"] = talib.EMA(close, timeperiod=21)
    df["ema200"] = talib.EMA(close, timeperiod=200)
    macd, signal, hist = talib.MACD(close, fastperiod=6, slowperiod=12, signalperiod=9)
    df["macd"], df["macdsignal"], df["macdhist"] = macd, signal, hist
    df["rsi"] = talib.RSI(close, timeperiod=7)
    df["atr"] = talib.ATR(
        df["high"].to_numpy(dtype=float), df["low"].to_numpy(dtype=float), close, timeperiod=14
    )
    df["volume_ratio"] = df["volume"] / df["volume"].rolling(20).mean()
    return df


def candidate_rows(df: pd.DataFrame) -> np.ndarray:
    hist = df["macdhist"]
    cross = ((hist > 0) & (hist.shift(1) <= 0)) | ((hist < 0) & (hist.shift(1) >= 0))
    return np.flatnonzero(cross.fillna(False).to_numpy())


def strategy_class() -> type:
    """The strategy class, imported as Freqtrade does (its folder on sys.path for the import)."""
    import sys

    sys.path.insert(0, str(ROOT / "strategies"))
    try:
        from GeminiOracleStrategy import GeminiOracleStrategy
    finally:
        sys.path.pop(0)
    return GeminiOracleStrategy
