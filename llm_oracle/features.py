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
    PCT_DECIMALS,
    RATIO_DECIMALS,
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
        columns = (rel["open"], rel["high"], rel["low"], rel["close"], vol_rel)
        if not (all(np.isfinite(col).all() for col in columns) and (vol_rel >= 0).all()):
            # Let validation say what is wrong with such a window.
            return tuple(
                Candle(o=o, h=h, l=lo, c=c, v=v)
                for o, h, lo, c, v in zip(*(col.tolist() for col in columns), strict=True)
            )
        # The values are known to be valid: round them as the model's validators do and skip
        # validation, the largest cost of building a request (24 candles each).
        pct, ratio = PCT_DECIMALS, RATIO_DECIMALS
        return tuple(
            Candle.model_construct(
                o=round(o, pct) + 0.0,
                h=round(h, pct) + 0.0,
                l=round(lo, pct) + 0.0,
                c=round(c, pct) + 0.0,
                v=round(v, ratio) + 0.0,
            )
            for o, h, lo, c, v in zip(*(col.tolist() for col in columns), strict=True)
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
    frame: pd.DataFrame | FrameArrays,
    rows: Sequence[int],
    sides: Sequence[Side],
    fees: Fees,
    *,
    timeframe: str,
    n_candles: int,
) -> list[tuple[int, OracleRequest]]:
    """Entry requests for the given candidate rows; rows without enough history are skipped.

    `frame` may be the frame's `FrameArrays`, when the caller keeps them for later requests.
    """
    arrays = frame if isinstance(frame, FrameArrays) else FrameArrays(frame)
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
    return exit_review_at(
        arrays, arrays.length - 1, position, fees, timeframe=timeframe, n_candles=n_candles
    )


def exit_review_at(
    arrays: FrameArrays,
    row: int,
    position: Position,
    fees: Fees,
    *,
    timeframe: str,
    n_candles: int,
) -> OracleRequest | None:
    """Exit review at `row` of arrays kept for the whole frame: the same request as
    `exit_review_request` on the frame cut after `row` (it reads rows up to `row` only)."""
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
