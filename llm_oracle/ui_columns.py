"""The oracle's per-candle results as dataframe columns, for FreqUI and plot-dataframe.

Live, Freqtrade analyses a fresh frame on every candle, and the strategy asks the oracle only
about the newest one: without a memory, a decision would be on the chart for one candle. The
strategy records every answer here by pair and candle (entries, vetoes, exit reviews) and
`paint` writes all of them into each new frame, vectorised (one index lookup per call, no
per-row Python). Backtests fill the same columns directly, since they ask about every candle.

No look-ahead: a mark belongs to the candle it was decided on, from data up to that candle; an
open trade's stop and target are painted from its entry candle on, never before.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import numpy as np
import pandas as pd

CONFIDENCE = "oracle_confidence"  # the entry decision's confidence, on candidate candles
REVIEW_CONFIDENCE = "oracle_review_confidence"  # an exit review's confidence
CANDIDATE = "oracle_candidate"  # close of a pre-filter candidate candle (marker)
CONFIRMED = "oracle_confirmed"  # close of a candidate the oracle confirmed (marker)
VETO = "oracle_veto"  # close of a candidate the oracle did not confirm (marker)
REVIEW_EXIT = "oracle_review_exit"  # close of a candle whose review said exit (marker)
STOP = "oracle_stop_loss"  # the confirmed decision's stop distance (fraction of price)
TARGET = "oracle_take_profit"  # the confirmed decision's target distance (fraction)
TRADE_STOP = "oracle_trade_stop"  # the open trade's initial stop, as a price
TRADE_TARGET = "oracle_trade_target"  # the open trade's oracle target, as a price

# Columns that hold a value only where the oracle said something: NaN elsewhere.
MARK_COLUMNS = (
    CONFIDENCE,
    REVIEW_CONFIDENCE,
    CANDIDATE,
    CONFIRMED,
    VETO,
    REVIEW_EXIT,
    STOP,
    TARGET,
    TRADE_STOP,
    TRADE_TARGET,
)


def plot_config() -> dict[str, object]:
    """FreqUI's / plot-dataframe's layout: markers on the price chart, confidences below.

    `type: scatter` is a marker series in FreqUI; plot-dataframe draws lines unless plotly's
    `mode` says markers (the `plotly` block only reaches plot-dataframe).
    """

    def marker(color: str, symbol: str, size: int = 9) -> dict[str, object]:
        return {
            "color": color,
            "type": "scatter",
            "plotly": {
                "mode": "markers",
                "marker": {"symbol": symbol, "size": size, "color": color},
            },
        }

    return {
        "main_plot": {
            "ema21": {"color": "orange"},
            "ema200": {"color": "purple"},
            CANDIDATE: marker("grey", "circle-open", 11),
            CONFIRMED: marker("green", "triangle-up"),
            VETO: marker("red", "x"),
            REVIEW_EXIT: marker("black", "square"),
            TRADE_STOP: {"color": "red"},
            TRADE_TARGET: {"color": "green"},
        },
        "subplots": {
            "MACD": {"macdhist": {"type": "bar", "color": "grey"}},
            "Oracle": {
                CONFIDENCE: marker("green", "circle"),
                REVIEW_CONFIDENCE: marker("blue", "diamond"),
            },
        },
    }


class Mark(NamedTuple):
    """What the oracle said on one candle (NaN: nothing of that kind)."""

    confidence: float = np.nan
    confirmed: float = np.nan  # 1.0 confirmed, 0.0 vetoed
    stop: float = np.nan
    target: float = np.nan
    review_confidence: float = np.nan
    review_exit: float = np.nan  # 1.0 the review said exit


_EMPTY = Mark()


class CandleMarks:
    """Oracle results by pair and candle open time, painted into every new frame (live)."""

    def __init__(self) -> None:
        self._by_pair: dict[str, dict[pd.Timestamp, Mark]] = {}

    def known(self, pair: str) -> set[pd.Timestamp]:
        return set(self._by_pair.get(pair, {}))

    def entry(
        self,
        pair: str,
        candle: datetime,
        confidence: float,
        confirmed: bool,
        stop: float | None,
        target: float | None,
    ) -> None:
        key = pd.Timestamp(candle)
        old = self._by_pair.setdefault(pair, {}).get(key, _EMPTY)
        self._by_pair[pair][key] = old._replace(
            confidence=confidence,
            confirmed=1.0 if confirmed else 0.0,
            stop=stop if confirmed and stop is not None else np.nan,
            target=target if confirmed and target is not None else np.nan,
        )

    def review(self, pair: str, candle: datetime, confidence: float, exits: bool) -> None:
        key = pd.Timestamp(candle)
        old = self._by_pair.setdefault(pair, {}).get(key, _EMPTY)
        self._by_pair[pair][key] = old._replace(
            review_confidence=confidence, review_exit=1.0 if exits else np.nan
        )

    def paint(self, pair: str, df: pd.DataFrame) -> None:
        """Write every known mark of `pair` into `df` (columns exist, NaN where unknown).

        Marks older than the frame's first candle are forgotten: live frames only move forward.
        """
        marks = self._by_pair.get(pair)
        if not marks or df.empty:
            return
        first = df["date"].iat[0]
        for stale in [t for t in marks if t < first]:
            del marks[stale]
        if not marks:
            return
        times = pd.DatetimeIndex(list(marks))
        rows = pd.Index(df["date"]).get_indexer(times)
        found = rows >= 0
        if not found.any():
            return
        rows = rows[found]
        values = np.array(list(marks.values()), dtype=float)[found]
        close = df["close"].to_numpy(dtype=float)[rows]
        confirmed = values[:, 1]
        _put(df, CONFIDENCE, rows, values[:, 0])
        _put(df, CONFIRMED, rows, np.where(confirmed == 1.0, close, np.nan))
        _put(df, VETO, rows, np.where(confirmed == 0.0, close, np.nan))
        _put(df, STOP, rows, values[:, 2])
        _put(df, TARGET, rows, values[:, 3])
        _put(df, REVIEW_CONFIDENCE, rows, values[:, 4])
        _put(df, REVIEW_EXIT, rows, np.where(values[:, 5] == 1.0, close, np.nan))

    def clear(self) -> None:
        self._by_pair.clear()


def _put(df: pd.DataFrame, column: str, rows: np.ndarray, values: np.ndarray) -> None:
    """Set `column` at `rows` where `values` is known; other rows keep what they hold."""
    known = ~np.isnan(values)
    if not known.any():
        return
    out = df[column].to_numpy(dtype=float, copy=True)
    out[rows[known]] = values[known]
    df[column] = out


def mark_decisions(
    df: pd.DataFrame,
    rows: np.ndarray,
    confidence: np.ndarray,
    confirmed: np.ndarray,
    stop: np.ndarray,
    target: np.ndarray,
) -> None:
    """Write a batch of entry answers at `rows` (backtests: every candidate at once)."""
    close = df["close"].to_numpy(dtype=float)[rows]
    _put(df, CONFIDENCE, rows, confidence)
    _put(df, CONFIRMED, rows, np.where(confirmed, close, np.nan))
    _put(df, VETO, rows, np.where(~confirmed, close, np.nan))
    _put(df, STOP, rows, np.where(confirmed, stop, np.nan))
    _put(df, TARGET, rows, np.where(confirmed, target, np.nan))


def paint_trade(
    df: pd.DataFrame, entry_candle: datetime, stop: float | None, target: float | None
) -> None:
    """An open trade's stop and target as flat lines from its entry candle to the newest."""
    start = int(df["date"].searchsorted(pd.Timestamp(entry_candle), side="left"))
    if start >= len(df):
        return
    for column, price in ((TRADE_STOP, stop), (TRADE_TARGET, target)):
        if price:
            out = df[column].to_numpy(dtype=float, copy=True)
            out[start:] = price
            df[column] = out
