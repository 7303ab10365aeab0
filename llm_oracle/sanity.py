"""Checks an LLM's decision must pass beyond its JSON schema.

The decision model bounds every field on its own; these checks relate the answer to the question:
the action must answer it (an entry confirms its candidate's side or holds, an exit review exits
or holds), the stop must sit beyond one candle's noise and within what the sizing rules assume
(relative to the request's ATR, and absolutely), and a target must clear the round-trip fees.
The per-question response schema (`llm_oracle.schema`) is built from the same bounds, so a model
that follows the schema never fails these checks.
"""

from __future__ import annotations

from llm_oracle.config import StopBounds
from llm_oracle.models import Action, OracleDecision, OracleRequest

# The decision model's own limits on a distance (OracleDecision.stop_loss / take_profit).
_DISTANCE_MIN, _STOP_MAX = 0.0005, 0.25


def stop_range(request: OracleRequest, bounds: StopBounds) -> tuple[float, float]:
    """The accepted stop_loss distance (fraction of price) for this request."""
    atr = request.indicators.atr_pct / 100.0
    low = min(_STOP_MAX, max(bounds.min, bounds.atr_min * atr))
    high = min(_STOP_MAX, max(low, min(bounds.max, bounds.atr_max * atr)))
    return low, high


def target_floor(request: OracleRequest) -> float:
    """The smallest accepted take_profit: just above the round-trip taker fees.

    One millionth above, rounded to 6 decimals, so the bound is a short exact number in a
    schema and strictly greater than the fees it must clear.
    """
    return max(_DISTANCE_MIN, round(2 * request.fees.taker + 1e-6, 6))


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
    floor = target_floor(request)
    if decision.take_profit is not None and decision.take_profit < floor:
        return (
            f"take_profit {decision.take_profit:g} does not clear round-trip fees "
            f"{2 * request.fees.taker:g}"
        )
    return None
