"""Indicators whose value at a candle does not depend on how much history came before it.

A recursive EMA remembers its seed forever: EMA200 computed on a live bot's ~1200 candles and on
a backtest's whole history differ by a few millionths, and a request value rounded to 0.1 bp
flips at the rounding boundary now and then, so a decision recorded live would not replay in
the backtest. A *windowed* EMA uses the EMA's own weights over the last `window` candles only
(renormalised), so any frame holding at least `window` candles gives the same value.
"""

from __future__ import annotations

import numpy as np


def windowed_ema(values: np.ndarray, period: int, window: int) -> np.ndarray:
    """EMA(`period`) weights over the last `window` values; NaN for the first `window - 1` rows.

    With `window` = 5 x `period` the truncated weight is e^-10 of the total: the same as an EMA
    that has long forgotten its seed, to far below any request's resolution.
    """
    values = np.asarray(values, dtype=float)
    alpha = 2.0 / (period + 1)
    weights = alpha * (1.0 - alpha) ** np.arange(window)
    weights /= weights.sum()
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        # np.convolve applies weights[0] to the newest value of each window.
        out[window - 1 :] = np.convolve(values, weights, mode="valid")
    return out
