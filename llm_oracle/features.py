"""Build anonymised `OracleRequest`s from an indicator frame, for selected rows only.

The request for row t reads rows t-n+1 .. t and nothing later: that is the whole no-look-ahead
guarantee, and `tests/test_features.py` checks it by truncating the frame after t.
Work is proportional to the number of candidate rows, never to the length of the frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from llm_oracle.models import (
    Candle,
    Fees,
    Indicators,
    OracleRequest,
    Position,
    Purpose,
    Side,
)

# The columns the strategy must provide (its populate_indicators owns the computation).
PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
INDICATOR_COLUMNS = (
    "rsi",
    "macd",
    "macdsignal",
    "macdhist",
    "ema9",
    "ema21",
    "ema200",
    "atr",
    "volume_ratio",
)


class FrameArrays:
    """The frame's needed columns as float arrays, extracted once per frame."""

    def __init__(self, frame: pd.DataFrame) -> None:
        missing = [c for c in (*PRICE_COLUMNS, *INDICATOR_COLUMNS) if c not in frame.columns]
        if missing:
            raise KeyError(f"indicator frame lacks columns: {', '.join(missing)}")
        # Per column: a multi-column selection copies the frame and costs twice as much.
        self.cols = {
            c: frame[c].to_numpy(dtype=float) for c in (*PRICE_COLUMNS, *INDICATOR_COLUMNS)
        }
        self.length = len(frame)

    def ready(self, row: int, n_candles: int) -> bool:
        """Enough history and finite indicators at `row` to ask about it."""
        if row < n_candles - 1 or row >= self.length:
            return False
        window = slice(row - n_candles + 1, row + 1)
        prices_ok = all(np.isfinite(self.cols[c][window]).all() for c in PRICE_COLUMNS)
        return (
            prices_ok
            and all(np.isfinite(self.cols[c][row]) for c in INDICATOR_COLUMNS)
            and bool(self.cols["close"][row] > 0)
        )

    def candles(self, row: int, n_candles: int) -> tuple[Candle, ...]:
        window = slice(row - n_candles + 1, row + 1)
        close_now = self.cols["close"][row]
        rel = {
            k: (self.cols[k][window] / close_now - 1.0) * 100.0
            for k in ("open", "high", "low", "close")
        }
        volume = self.cols["volume"][window]
        mean_volume = float(volume.mean())
        vol_rel = volume / mean_volume if mean_volume > 0 else np.zeros_like(volume)
        return tuple(
            Candle(o=o, h=h, l=lo, c=c, v=v)
            for o, h, lo, c, v in zip(
                rel["open"].tolist(),
                rel["high"].tolist(),
                rel["low"].tolist(),
                rel["close"].tolist(),
                vol_rel.tolist(),
                strict=True,
            )
        )

    def indicators(self, row: int) -> Indicators:
        c = self.cols
        close_now = c["close"][row]

        def vs_close(col: str) -> float:
            return float((close_now / c[col][row] - 1.0) * 100.0)

        def pct_of_close(col: str) -> float:
            return float(c[col][row] / close_now * 100.0)

        return Indicators(
            rsi=float(c["rsi"][row]),
            macd_pct=pct_of_close("macd"),
            macd_signal_pct=pct_of_close("macdsignal"),
            macd_hist_pct=pct_of_close("macdhist"),
            ema9_pct=vs_close("ema9"),
            ema21_pct=vs_close("ema21"),
            ema200_pct=vs_close("ema200"),
            atr_pct=pct_of_close("atr"),
            volume_ratio=float(c["volume_ratio"][row]),
        )


def entry_requests(
    frame: pd.DataFrame,
    rows: Sequence[int],
    sides: Sequence[Side],
    fees: Fees,
    *,
    timeframe: str,
    n_candles: int,
) -> list[tuple[int, OracleRequest]]:
    """Entry requests for the given candidate rows; rows without enough history are skipped."""
    arrays = FrameArrays(frame)
    out: list[tuple[int, OracleRequest]] = []
    for row, side in zip(rows, sides, strict=True):
        if not arrays.ready(row, n_candles):
            continue
        out.append(
            (
                row,
                OracleRequest(
                    purpose=Purpose.ENTRY,
                    candidate=side,
                    timeframe=timeframe,
                    candles=arrays.candles(row, n_candles),
                    indicators=arrays.indicators(row),
                    fees=fees,
                ),
            )
        )
    return out


def exit_review_request(
    frame: pd.DataFrame,
    position: Position,
    fees: Fees,
    *,
    timeframe: str,
    n_candles: int,
) -> OracleRequest | None:
    """Exit review of an open position at the frame's last row (None without enough data)."""
    arrays = FrameArrays(frame.iloc[-n_candles:])  # only the window: the frame may be long
    row = arrays.length - 1
    if not arrays.ready(row, n_candles):
        return None
    return OracleRequest(
        purpose=Purpose.EXIT_REVIEW,
        candidate=None,
        timeframe=timeframe,
        candles=arrays.candles(row, n_candles),
        indicators=arrays.indicators(row),
        position=position,
        fees=fees,
    )
