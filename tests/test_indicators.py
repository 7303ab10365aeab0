"""The windowed EMA: the same value from any history of at least `window` candles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib

from llm_oracle.indicators import windowed_ema
from tests.factories import DATA_DIR


def test_value_does_not_depend_on_the_history_before_the_window() -> None:
    close = pd.read_feather(DATA_DIR / "BTC_USDT_USDT-3m-futures.feather")["close"].to_numpy()
    row = 2515
    values = {windowed_ema(close[start : row + 1], 200, 1000)[-1] for start in (0, 516, 1515)}
    assert len(values) == 1  # bit for bit
    # A recursive EMA started 1001 candles back is off by its seed's remains.
    recursive = {talib.EMA(close[start : row + 1], 200)[-1] for start in (0, 1515)}
    assert len(recursive) == 2


def test_it_tracks_the_recursive_ema_and_is_nan_before_a_full_window() -> None:
    close = pd.read_feather(DATA_DIR / "BTC_USDT_USDT-3m-futures.feather")["close"].to_numpy()
    windowed = windowed_ema(close, 200, 1000)
    assert np.isnan(windowed[:999]).all() and not np.isnan(windowed[999:]).any()
    recursive = talib.EMA(close, 200)
    assert np.max(np.abs(windowed[2000:] / recursive[2000:] - 1)) < 1e-5
    assert len(windowed_ema(close[:10], 200, 1000)) == 10
