"""The money rules as pure functions, plus their validated config (`money_rules` config block).

Nothing here knows about Freqtrade: the strategy passes in numbers (fees, leverage, prices,
equity) and applies the answers in its callbacks. Keeping the arithmetic here makes every rule
testable on its own, including property-based tests over fees, leverage and prices.

Conventions (Freqtrade's): a "ratio" is profit or risk on margin, i.e. already multiplied by
leverage; a "distance" is a fraction of the price (0.01 = 1%), independent of leverage.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llm_oracle.config import OracleConfigError
from llm_oracle.config_errors import format_errors
from llm_oracle.models import Side

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)
# strict=True refuses "yes" for a bool and true for a number; JSON integers stay valid floats.
Confidence = Annotated[float, Field(ge=0, le=1)]
TierLeverage = Annotated[float, Field(ge=1, le=3)]


class Protections(BaseModel):
    """Entry blockers. Any of them can be switched off by setting it to null.

    Every value has an upper bound as well as a lower one: a typo such as 1e12 hours would
    otherwise overflow date arithmetic inside a callback, and a callback that raises must never
    be what decides an entry.
    """

    model_config = _STRICT
    max_drawdown: float | None = Field(default=0.15, gt=0, le=1)
    drawdown_lookback_candles: int = Field(default=4800, ge=10, le=100_000)  # 10 days of 3m
    drawdown_stop_candles: int = Field(default=480, ge=1, le=100_000)  # 1 day
    daily_loss: float | None = Field(default=0.05, gt=0, le=1)
    consecutive_stoplosses: int | None = Field(default=3, ge=1, le=100)
    stoploss_pause_hours: float = Field(default=4.0, gt=0, le=24 * 30)
    pair_cooldown_candles: int | None = Field(default=5, ge=1, le=10_000)


class MoneyRules(BaseModel):
    model_config = _STRICT
    fee_multiple: float = Field(default=3.0, ge=1, le=50, description="exit at N x round trip")
    oracle_take_profit: bool = Field(
        default=True, description="an oracle target may raise the exit above the fee rule"
    )
    atr_stop_multiplier: float = Field(default=2.0, gt=0, le=20)
    trailing_start_fee_multiple: float = Field(
        default=2.0, ge=0, le=100, description="trail once profit >= this x round trip fee"
    )
    trailing_atr_multiplier: float = Field(default=1.5, gt=0, le=20)
    liquidation_buffer: float = Field(default=0.005, ge=0, le=0.2)
    risk_per_trade: float = Field(default=0.02, gt=0, le=0.2)
    max_open_risk: float = Field(default=0.10, gt=0, le=1)
    max_leverage: float = Field(default=3.0, ge=1, le=3)
    leverage_tiers: tuple[tuple[Confidence, TierLeverage], ...] = Field(
        default=((0.85, 3.0), (0.7, 2.0), (0.0, 1.0)),
        description="(min confidence, leverage), highest first",
    )
    reentry_margin: float = Field(default=0.002, ge=0, le=0.2)
    reentry_window_hours: float = Field(default=12.0, ge=0, le=24 * 30)
    max_candle_age_candles: int = Field(default=2, ge=1, le=100)
    integrity_window: int = Field(default=24, ge=2, le=500)
    protections: Protections = Protections()

    @model_validator(mode="after")
    def _tiers_descend(self) -> Self:
        confidences = [c for c, _ in self.leverage_tiers]
        if confidences != sorted(confidences, reverse=True) or not confidences:
            raise ValueError("leverage_tiers must be non-empty, highest confidence first")
        if confidences[-1] > 0:
            raise ValueError("the last leverage tier must start at confidence 0")
        return self


def load_money_rules(raw: dict[str, Any] | None) -> MoneyRules:
    try:
        # Validated as JSON, which is what the config is: strict mode then still accepts arrays
        # for tuples and integers for floats, but refuses true for a number and "no" for a bool.
        return MoneyRules.model_validate_json(json.dumps({} if raw is None else raw))
    except ValidationError as exc:
        raise OracleConfigError(format_errors("money_rules", exc, MoneyRules)) from None
    except (TypeError, ValueError) as exc:  # not JSON at all (e.g. NaN, an object)
        raise OracleConfigError(f"invalid 'money_rules' config: {exc}") from None


# --- exits ---------------------------------------------------------------------------------------
def fee_exit_ratio(
    fee_open: float,
    fee_close: float,
    leverage: float,
    multiple: float,
    side: Side,
    tick_distance: float = 0.0,
) -> float:
    """Profit ratio (net of fees, on margin) at which net profit is at least N x the fees paid.

    Freqtrade's profit ratio is (close value / open value - 1) x leverage for a long, with the
    open value carrying fee_open and the close value fee_close. Solving
    "close value - open value = N x (fee_open x open price + fee_close x close price)" gives the
    exit price, and from it this ratio; to first order it is N x (fee_open + fee_close) x leverage.

    `tick_distance` (the pair's tick / open price) moves that exit price one tick in the trade's
    favour: Freqtrade rounds an exit price to the nearest tick, and without the extra tick about
    a third of the exits on real tick sizes landed just below N x the fees.
    """
    n1 = multiple + 1
    if side is Side.LONG:
        price_ratio = (1 + n1 * fee_open) / (1 - n1 * fee_close) + tick_distance
        return (price_ratio * (1 - fee_close) / (1 + fee_open) - 1) * leverage
    price_ratio = (1 - n1 * fee_open) / (1 + n1 * fee_close) - tick_distance
    return (1 - price_ratio * (1 + fee_close) / (1 - fee_open)) * leverage


def target_exit_ratio(
    take_profit: float | None, fee_open: float, fee_close: float, leverage: float
) -> float | None:
    """The oracle's take-profit distance as a net profit ratio on margin."""
    if not take_profit:
        return None
    return (take_profit - fee_open - fee_close) * leverage


def roi_ratio(
    rules: MoneyRules,
    fee_open: float,
    fee_close: float,
    leverage: float,
    take_profit: float | None,
    side: Side,
    tick_distance: float = 0.0,
) -> float:
    floor = fee_exit_ratio(fee_open, fee_close, leverage, rules.fee_multiple, side, tick_distance)
    target = target_exit_ratio(take_profit, fee_open, fee_close, leverage)
    if rules.oracle_take_profit and target is not None:
        return max(floor, target)  # an oracle target may raise the exit, never lower it
    return floor


# --- stops ---------------------------------------------------------------------------------------
def stop_price(open_rate: float, distance: float, side: Side) -> float:
    return open_rate * (1 + distance) if side is Side.SHORT else open_rate * (1 - distance)


def tighter(a: float, b: float, side: Side) -> float:
    """The stop price closer to the market: higher for a long, lower for a short."""
    return max(a, b) if side is Side.LONG else min(a, b)


def initial_stop_distance(
    oracle_stop: float | None,
    atr_distance: float | None,
    hard_stoploss: float,
    leverage: float,
) -> float:
    """Distance of the tightest valid stop at entry; never looser than the hard stoploss.

    `hard_stoploss` is Freqtrade's ratio on margin (e.g. -0.05), hence divided by leverage.
    """
    candidates = [abs(hard_stoploss) / leverage]
    candidates += [d for d in (oracle_stop, atr_distance) if d is not None and d > 0]
    return min(candidates)


def trailing_price(current_rate: float, atr: float, multiplier: float, side: Side) -> float:
    offset = multiplier * atr
    return current_rate + offset if side is Side.SHORT else current_rate - offset


def respect_liquidation(stop: float, liquidation: float | None, buffer: float, side: Side) -> float:
    """Move the stop inside the liquidation price (with a buffer) if it is not already."""
    if not liquidation or liquidation <= 0:
        return stop
    if side is Side.LONG:
        return max(stop, liquidation * (1 + buffer))
    return min(stop, liquidation * (1 - buffer))


# --- sizing and exposure -------------------------------------------------------------------------
def loss_at_stop(stake: float, leverage: float, distance: float, round_trip_fee: float) -> float:
    """Loss in quote currency if the position is closed at its stop, fees included."""
    return stake * leverage * (distance + round_trip_fee)


def risk_sized_stake(
    equity: float,
    risk_per_trade: float,
    leverage: float,
    distance: float,
    round_trip_fee: float,
) -> float:
    """Largest stake (margin) whose loss at the stop is at most risk_per_trade x equity."""
    return risk_per_trade * equity / (leverage * (distance + round_trip_fee))


def open_trade_risk(
    amount: float, open_rate: float, stop: float, side: Side, round_trip_fee: float
) -> float:
    """What an open trade can still lose at its current stop (0 once the stop locks a profit).

    For a trade whose entry order is still open, pass the requested amount: the order can fill
    at any moment, and until it does the trade's filled amount is 0.
    """
    adverse = (open_rate - stop) if side is Side.LONG else (stop - open_rate)
    return max(adverse, 0.0) * amount + round_trip_fee * amount * open_rate


def leverage_for(confidence: float, rules: MoneyRules, exchange_max: float) -> float:
    for min_confidence, lev in rules.leverage_tiers:
        if confidence >= min_confidence:
            return max(1.0, min(lev, rules.max_leverage, exchange_max))
    return 1.0


# --- re-entry and data integrity -----------------------------------------------------------------
def reentry_allowed(
    side: Side,
    rate: float,
    last_exit_price: float,
    last_exit_profitable: bool,
    last_exit_time: datetime,
    now: datetime,
    rules: MoneyRules,
) -> bool:
    """After a profitable exit, re-enter a long only below (a short only above) that exit."""
    if not last_exit_profitable:
        return True
    if now - last_exit_time > timedelta(hours=rules.reentry_window_hours):
        return True
    if side is Side.LONG:
        return rate <= last_exit_price * (1 - rules.reentry_margin)
    return rate >= last_exit_price * (1 + rules.reentry_margin)


def clean_windows(
    epoch_s: np.ndarray, volume: np.ndarray, timeframe_s: int, window: int
) -> np.ndarray:
    """Per row (times in epoch seconds): True when the last `window` candles are evenly spaced and
    all traded.

    Freqtrade fills missing candles with zero-volume copies, so a gap shows up as zero volume in
    backtests and as a date jump live; both make the row unusable for an entry.
    """
    n = len(epoch_s)
    if n == 0:
        return np.zeros(0, dtype=bool)
    step_bad = np.zeros(n, dtype=bool)
    step_bad[1:] = np.diff(epoch_s) != timeframe_s
    bad = step_bad | ~(volume > 0)
    # A row is clean when no bad row falls inside its trailing window (rolling sum via cumsum).
    counts = np.cumsum(bad.astype(np.int64))
    shifted = np.concatenate([np.zeros(window, dtype=np.int64), counts[:-window]])[:n]
    clean = (counts - shifted) == 0
    clean[: window - 1] = False
    return clean
