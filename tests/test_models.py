import json

import pytest
from pydantic import ValidationError

from llm_oracle.models import (
    Action,
    Candle,
    ErrorKind,
    JournalEntry,
    OracleDecision,
    Position,
    Purpose,
    Side,
)
from tests.factories import make_request


def test_request_rounds_floats_and_normalises_negative_zero() -> None:
    candle = Candle(o=-0.000001, h=1.234567891, l=-0.5, c=0.0, v=1.004)
    assert candle.o == 0.0 and str(candle.o) == "0.0"
    assert candle.h == 1.235
    assert candle.v == 1.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_request_rejects_non_finite_values(bad: float) -> None:
    with pytest.raises(ValidationError):
        Candle(o=bad, h=0, l=0, c=0, v=1)


def test_entry_request_needs_candidate_and_no_position() -> None:
    with pytest.raises(ValidationError, match="candidate"):
        make_request(candidate=None)
    pos = Position(side=Side.LONG, profit_pct=0.1, candles_held=3, leverage=2)
    with pytest.raises(ValidationError, match="candidate side and no position"):
        make_request(position=pos)
    with pytest.raises(ValidationError, match="needs the position"):
        make_request(purpose=Purpose.EXIT_REVIEW, candidate=None)


def test_request_has_no_pair_timestamp_or_absolute_price() -> None:
    payload = json.loads(make_request().canonical_json())
    assert set(payload) == {
        "purpose",
        "candidate",
        "timeframe",
        "candles",
        "indicators",
        "position",
        "fees",
    }


def test_canonical_json_is_sorted_and_compact() -> None:
    text = make_request().canonical_json()
    assert " " not in text
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "long", "confidence": 1.2, "stop_loss": 0.01},
        {"action": "long", "confidence": -0.1, "stop_loss": 0.01},
        {"action": "long", "confidence": 0.7},  # no stop on an entry
        {"action": "short", "confidence": 0.7, "stop_loss": 0.9},
        {"action": "buy", "confidence": 0.7, "stop_loss": 0.01},
        {"action": "hold", "confidence": 0.5, "extra": 1},
    ],
)
def test_decision_rejects_bad_values(fields: dict) -> None:
    with pytest.raises(ValidationError):
        OracleDecision.model_validate(fields)


def test_decision_fits_purpose() -> None:
    entry = make_request()
    review = make_request(
        purpose=Purpose.EXIT_REVIEW,
        candidate=None,
        position=Position(side=Side.SHORT, profit_pct=-0.2, candles_held=5, leverage=1),
    )
    exit_ = OracleDecision(action=Action.EXIT, confidence=0.9)
    long_ = OracleDecision(action=Action.LONG, confidence=0.9, stop_loss=0.01)
    assert exit_.fits(entry) is not None
    assert exit_.fits(review) is None
    assert long_.fits(review) is not None
    assert long_.fits(entry) is None


def test_journal_entry_holds_decision_xor_error() -> None:
    base = {
        "key": "a" * 64,
        "purpose": "entry",
        "backend": "rules",
        "model": "m",
        "prompt_version": "v",
        "request_json": "{}",
    }
    with pytest.raises(ValidationError, match="either"):
        JournalEntry(**base, decision=None)
    with pytest.raises(ValidationError, match="either"):
        JournalEntry(**base, decision=OracleDecision.hold("x"), error_kind=ErrorKind.TIMEOUT)
    assert JournalEntry(**base, decision=None, error_kind=ErrorKind.TIMEOUT).error_kind
