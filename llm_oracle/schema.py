"""The answer schema of one question: exactly the answers the oracle accepts, nothing more.

A schema that allowed every action for every question would let a model that follows it answer
"short" to a long candidate or "exit" to an entry: paid answers that must then be rejected. So the
schema is built per question, from the same bounds the sanity checks apply (`llm_oracle.sanity`):

- an entry may confirm its candidate's side or hold, and always carries a stop_loss within the
  request's sane range (a hold's stop is ignored); a take_profit, when given, clears the
  round-trip fees;
- an exit review may answer exit or hold, with no levels.

The schema is written in the OpenAPI subset Gemini accepts (type names in capitals, `nullable`,
`property_ordering`), as plain data; the Gemini backend turns it into `google.genai.types.Schema`.
Bump SCHEMA_VERSION whenever what this builds changes: it is part of the decision key.
"""

from __future__ import annotations

from typing import Any

from llm_oracle.config import StopBounds
from llm_oracle.models import Action, OracleDecision, OracleRequest, Purpose
from llm_oracle.sanity import stop_range, target_floor

SCHEMA_VERSION = "2"  # 1: one schema for every question; 2: per question


def allowed_actions(request: OracleRequest) -> list[Action]:
    """The actions that answer this question, in a fixed order (the schema's enum)."""
    if request.purpose is Purpose.ENTRY:
        assert request.candidate is not None  # guaranteed by OracleRequest validation
        return [Action(request.candidate.value), Action.HOLD]
    return [Action.EXIT, Action.HOLD]


def answer_schema(request: OracleRequest, bounds: StopBounds) -> dict[str, Any]:
    """The response schema of this one question (Gemini's schema subset, snake_case keys)."""
    fields = OracleDecision.model_fields
    reasoning_max = next(
        (m.max_length for m in fields["reasoning"].metadata if hasattr(m, "max_length")), 2000
    )
    properties: dict[str, Any] = {
        "action": {"type": "STRING", "enum": [a.value for a in allowed_actions(request)]},
        "confidence": {
            "type": "NUMBER",
            "minimum": 0.0,
            "maximum": 1.0,
            "description": "probability (0..1) that the answer is right",
        },
    }
    required = ["action", "confidence"]
    if request.purpose is Purpose.ENTRY:
        low, high = stop_range(request, bounds)
        properties["stop_loss"] = {
            "type": "NUMBER",
            "minimum": low,
            "maximum": high,
            "description": fields["stop_loss"].description,
        }
        properties["take_profit"] = {
            "type": "NUMBER",
            "nullable": True,
            "minimum": target_floor(request),
            "maximum": _target_max(),
            "description": fields["take_profit"].description,
        }
        required.append("stop_loss")
    properties["reasoning"] = {
        "type": "STRING",
        "max_length": reasoning_max,
        "description": "one or two short sentences",
    }
    required.append("reasoning")
    return {
        "type": "OBJECT",
        "properties": properties,
        "required": required,
        "property_ordering": list(properties),
    }


def _target_max() -> float:
    meta = OracleDecision.model_fields["take_profit"].metadata
    return float(next(m.le for m in meta if hasattr(m, "le")))


def answer_fields(request: OracleRequest) -> frozenset[str]:
    """The keys an answer to this question may carry (others are ignored, not fatal)."""
    if request.purpose is Purpose.ENTRY:
        return frozenset({"action", "confidence", "stop_loss", "take_profit", "reasoning"})
    return frozenset({"action", "confidence", "reasoning"})
