"""The veto ledger: for every candidate, the trade it would have been under the money rules.

Evaluation only. It reads the candles *after* the signal, so nothing here may ever reach a
request: the runner computes it after every request of the range has been built, and the
variants' decision tables are built without it (tests check that requests are identical with
and without it).

Each candidate is valued the same way, whatever the oracle said, so a veto can be priced: entry
at the next candle's open, 1x leverage, the money rules' ATR stop (never looser than the hard
stop), the fee-multiple take-profit, the ATR trailing stop once in profit, no oracle stop or
target. Within one candle a stop is assumed to fill before a target (pessimistic). The money
rules have no time limit: a trade still open after `horizon` candles is valued at that close.
R is the net result over the loss at the stop with fees (what `risk_per_trade` sizes on).
"""

from __future__ import annotations

import numpy as np

from llm_oracle import risk
from llm_oracle.models import Side
from llm_oracle.report.spec import LedgerOutcome


def _net_return(entry: float, exit_: float, fee: float, side: Side) -> float:
    """Freqtrade's profit ratio at 1x: both fees on their own legs."""
    if side is Side.LONG:
        return exit_ * (1 - fee) / (entry * (1 + fee)) - 1.0
    return 1.0 - exit_ * (1 + fee) / (entry * (1 - fee))


def _target_price(entry: float, ratio: float, fee: float, side: Side) -> float:
    """The price at which the net profit ratio reaches `ratio` (inverse of _net_return)."""
    if side is Side.LONG:
        return entry * (1 + ratio) * (1 + fee) / (1 - fee)
    return entry * (1 - ratio) * (1 - fee) / (1 + fee)


def value_candidate(
    side: Side,
    signal_row: int,
    opens: np.ndarray,
    highs: np.ndarray,
    lows: np.ndarray,
    closes: np.ndarray,
    atr: float,
    *,
    rules: risk.MoneyRules,
    fee: float,
    hard_stoploss: float,
    horizon: int,
) -> LedgerOutcome | None:
    """The outcome of trading the candidate at `signal_row`; None if no candle follows it."""
    first = signal_row + 1
    if first >= len(opens) or not np.isfinite(atr) or atr <= 0:
        return None
    entry = float(opens[first])
    atr_distance = rules.atr_stop_multiplier * atr / float(closes[signal_row])
    distance = risk.initial_stop_distance(None, atr_distance, hard_stoploss, 1.0)
    stop = risk.stop_price(entry, distance, side)
    target = _target_price(entry, risk.roi_ratio(rules, fee, fee, 1.0, None, side), fee, side)
    trail_from = rules.trailing_start_fee_multiple * 2 * fee
    risk_unit = distance + 2 * fee
    last = min(len(opens) - 1, first + horizon - 1)
    long = side is Side.LONG
    trailed = False
    for i in range(first, last + 1):
        hit_stop = lows[i] <= stop if long else highs[i] >= stop
        if hit_stop:
            # A gap through the stop fills at the open, as in a backtest.
            price = min(stop, opens[i]) if long else max(stop, opens[i])
            result = _net_return(entry, float(price), fee, side)
            kind = "trailing" if trailed else "stop"
            return LedgerOutcome(
                r=result / risk_unit, net_return=result, exit=kind, candles=i - first + 1
            )
        hit_target = highs[i] >= target if long else lows[i] <= target
        if hit_target:
            price = max(target, opens[i]) if long else min(target, opens[i])
            result = _net_return(entry, float(price), fee, side)
            return LedgerOutcome(
                r=result / risk_unit, net_return=result, exit="target", candles=i - first + 1
            )
        if _net_return(entry, float(closes[i]), fee, side) >= trail_from:
            trail = risk.trailing_price(float(closes[i]), atr, rules.trailing_atr_multiplier, side)
            tightened = risk.tighter(stop, trail, side)
            trailed = trailed or tightened != stop
            stop = tightened
    result = _net_return(entry, float(closes[last]), fee, side)
    kind = "horizon" if last == first + horizon - 1 else "end_of_data"
    return LedgerOutcome(
        r=result / risk_unit, net_return=result, exit=kind, candles=last - first + 1
    )
