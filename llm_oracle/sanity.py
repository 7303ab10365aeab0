"""Checks an LLM's decision must pass beyond its JSON schema.

The schema bounds every field on its own; these checks relate the answer to the question: the
stop must sit beyond one candle's noise and within what the sizing rules assume (relative to the
request's ATR, and absolutely), and a target must at least pay the round-trip fees.
"""

from __future__ import annotations

from llm_oracle.config import StopBounds
from llm_oracle.models import Action, OracleDecision, OracleRequest


def stop_range(request: OracleRequest, bounds: StopBounds) -> tuple[float, float]:
    """The accepted stop_loss distance (fraction of price) for this request."""
    atr = request.indicators.atr_pct / 100.0
    low = max(bounds.min, bounds.atr_min * atr)
    high = max(low, min(bounds.max, bounds.atr_max * atr))
    return low, high


def check_decision(
    decision: OracleDecision, request: OracleRequest, bounds: StopBounds
) -> str | None:
    """Why the decision is unusable for this request, or None."""
    problem = decision.fits(request)
    if problem is not None:
        return problem
    if decision.action not in (Action.LONG, Action.SHORT):
        return None  # hold / exit carry no levels that are acted on
    stop = decision.stop_loss
    assert stop is not None  # OracleDecision requires a stop on long/short
    low, high = stop_range(request, bounds)
    if not low <= stop <= high:
        return (
            f"stop_loss {stop:g} outside the sane range [{low:g}, {high:g}] "
            f"(ATR {request.indicators.atr_pct:g}%)"
        )
    fees = 2 * request.fees.taker
    if decision.take_profit is not None and decision.take_profit <= fees:
        return f"take_profit {decision.take_profit:g} does not clear round-trip fees {fees:g}"
    return None
