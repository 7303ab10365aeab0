"""Records that cross a boundary: what the oracle is asked, what it answers, what the journal keeps.

Requests are anonymised on purpose: no pair name, no timestamp, no absolute price. An LLM that sees
"BTC on 2025-06-02" may remember what happened next; one that sees relative candles cannot.
Every float in a request is rounded when the model is built, so the canonical JSON (and with it the
decision key) is the same on every machine and every run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def canonical_round(value: float, decimals: int) -> float:
    # round() alone keeps -0.0, which serialises differently from 0.0.
    return round(value, decimals) + 0.0


def _rounded(decimals: int) -> AfterValidator:
    return AfterValidator(lambda value: canonical_round(value, decimals))


# Resolution of request values. Percent values keep 3 decimals (0.1 basis point): finer than any
# decision needs, and coarse enough that EMA200's seed, which differs when a backtest starts on
# another day, does not change the key once the startup candles have let it fade (see strategy).
PCT_DECIMALS, RATIO_DECIMALS = 3, 2
Pct = Annotated[float, _rounded(PCT_DECIMALS)]
Ratio = Annotated[float, _rounded(RATIO_DECIMALS)]
Oscillator = Annotated[float, _rounded(1)]
FeeRate = Annotated[float, _rounded(6)]


class Purpose(StrEnum):
    ENTRY = "entry"
    EXIT_REVIEW = "exit_review"


class Side(StrEnum):
    LONG = "long"
    SHORT = "short"


class Action(StrEnum):
    LONG = "long"
    SHORT = "short"
    HOLD = "hold"
    EXIT = "exit"


class ErrorKind(StrEnum):
    """Why a backend produced no usable decision; journaled with the failed attempt.

    Three families, which the limits treat differently (`is_content`, `is_service`):
    - service failures (the provider did not answer properly) count towards the circuit breaker;
    - content errors (the provider answered, the answer is unusable) are journaled and counted
      per question, never against the provider's health: a question that keeps getting them is
      "unanswerable" (`gemini.max_invalid_answers`) instead of being asked and paid for again;
    - local refusals (budget, circuit) never reach the provider.
    """

    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TRANSPORT = "transport"
    INVALID_JSON = "invalid_json"
    TRUNCATED = "truncated"
    BLOCKED = "blocked"
    INVALID_DECISION = "invalid_decision"
    ANSWER_TOO_LARGE = "answer_too_large"  # beyond gemini.max_answer_bytes: refused, not stored
    MODEL_MISMATCH = "model_mismatch"  # answered by another model than the configured one
    BUDGET_EXHAUSTED = "budget_exhausted"
    CIRCUIT_OPEN = "circuit_open"
    AUTH = "auth"  # no API key, or the provider rejected it (401/403)
    CLIENT_ERROR = "client_error"  # any other 4xx (or a refused redirect): not retried
    BACKEND_ERROR = "backend_error"
    # Outcome only, never journaled: the question already got max_invalid_answers content errors.
    UNANSWERABLE = "unanswerable"
    # A journal row whose stored answer no longer validates; superseded by a fresh answer.
    UNREADABLE = "unreadable"

    @property
    def is_content(self) -> bool:
        """The provider answered, but the answer cannot be used for this question."""
        return self in _CONTENT_KINDS

    @property
    def is_local(self) -> bool:
        """Refused or decided here, without asking the provider."""
        return self in _LOCAL_KINDS

    @property
    def is_service(self) -> bool:
        """A failure of the provider or the way to it: what the circuit breaker counts."""
        return not (self.is_content or self.is_local)


_CONTENT_KINDS = frozenset(
    {
        ErrorKind.INVALID_JSON,
        ErrorKind.TRUNCATED,
        ErrorKind.BLOCKED,
        ErrorKind.INVALID_DECISION,
        ErrorKind.ANSWER_TOO_LARGE,
    }
)
_LOCAL_KINDS = frozenset(
    {
        ErrorKind.BUDGET_EXHAUSTED,
        ErrorKind.CIRCUIT_OPEN,
        ErrorKind.UNANSWERABLE,
        ErrorKind.UNREADABLE,
    }
)
CONTENT_ERROR_KINDS: tuple[str, ...] = tuple(sorted(k.value for k in _CONTENT_KINDS))


class DecisionSource(StrEnum):
    """Where an answer handed to the strategy came from."""

    JOURNAL = "journal"  # cache / replay hit
    BACKEND = "backend"  # fresh call, recorded
    FALLBACK = "fallback"  # miss or failure answered by the fallback policy, not recorded


_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Candle(BaseModel):
    """One candle relative to the latest close: prices in percent, volume vs the window mean."""

    model_config = _FROZEN

    o: Pct
    h: Pct
    l: Pct  # noqa: E741 - o/h/l/c is the universal candle shorthand
    c: Pct
    v: Ratio = Field(ge=0)


class Indicators(BaseModel):
    """Indicator values at the decision candle, expressed without absolute prices."""

    model_config = _FROZEN
    rsi: Oscillator = Field(ge=0, le=100, description="RSI(7)")
    macd_pct: Pct = Field(description="MACD(6,12,9) line as % of close")
    macd_signal_pct: Pct
    macd_hist_pct: Pct
    ema9_pct: Pct = Field(description="close vs EMA9, %")
    ema21_pct: Pct
    ema200_pct: Pct
    atr_pct: Pct = Field(ge=0, description="ATR(14) as % of close")
    volume_ratio: Ratio = Field(ge=0, description="volume / its 20-candle mean")


class Position(BaseModel):
    """An open trade's context for an exit review."""

    model_config = _FROZEN
    side: Side
    profit_pct: Pct = Field(description="profit after fees on margin, %")
    candles_held: int = Field(ge=0)
    leverage: Ratio = Field(ge=1, le=100)


class Fees(BaseModel):
    model_config = _FROZEN
    maker: FeeRate = Field(ge=0, le=0.01)
    taker: FeeRate = Field(ge=0, le=0.01)


class OracleRequest(BaseModel):
    """Everything the oracle may know when it decides at candle t, and nothing after t."""

    model_config = _FROZEN
    purpose: Purpose
    candidate: Side | None = Field(description="the local pre-filter's side (entry only)")
    timeframe: str = Field(pattern=r"^\d+[mhd]$")
    candles: tuple[Candle, ...] = Field(min_length=1, max_length=500, description="oldest first")
    indicators: Indicators
    position: Position | None = None
    fees: Fees

    @model_validator(mode="after")
    def _purpose_matches_context(self) -> Self:
        if self.purpose is Purpose.ENTRY and (self.candidate is None or self.position is not None):
            raise ValueError("an entry request needs a candidate side and no position")
        if self.purpose is Purpose.EXIT_REVIEW and self.position is None:
            raise ValueError("an exit review needs the position")
        return self

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class OracleDecision(BaseModel):
    """The oracle's answer. Distances are fractions of the current price (0.01 = 1%).

    Only inclusive bounds (ge/le): google-genai rejects exclusiveMinimum/Maximum when it converts
    a pydantic model to Gemini's schema subset.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    action: Action
    confidence: float = Field(ge=0, le=1)
    stop_loss: float | None = Field(
        default=None, ge=0.0005, le=0.25, description="stop distance from entry price, fraction"
    )
    take_profit: float | None = Field(
        default=None, ge=0.0005, le=1.0, description="target distance from entry price, fraction"
    )
    reasoning: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _entries_carry_a_stop(self) -> Self:
        if self.action in (Action.LONG, Action.SHORT) and self.stop_loss is None:
            raise ValueError("a long or short decision must carry a stop_loss")
        return self

    def fits(self, request: OracleRequest) -> str | None:
        """Why this decision cannot answer the request, or None when it can.

        An entry may only confirm the pre-filter's side or veto it: answering the opposite side
        would open a trade no local check ever proposed.
        """
        if request.purpose is Purpose.ENTRY:
            assert request.candidate is not None  # guaranteed by OracleRequest validation
            allowed = {Action(request.candidate.value), Action.HOLD}
        else:
            allowed = {Action.HOLD, Action.EXIT}
        if self.action not in allowed:
            names = " or ".join(sorted(a.value for a in allowed))
            return (
                f"action {self.action.value!r} is not allowed for {request.purpose.value} "
                f"(expected {names})"
            )
        return None

    @classmethod
    def hold(cls, reasoning: str) -> OracleDecision:
        return cls(action=Action.HOLD, confidence=0.0, reasoning=reasoning)


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    prompt_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    cached_tokens: int = 0


class JournalEntry(BaseModel):
    """One row of the decision journal: a decision, or a failed attempt with its error kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    key: str = Field(pattern=r"^[0-9a-f]{64}$")
    purpose: Purpose
    backend: str
    model: str
    prompt_version: str
    request_json: str
    decision: OracleDecision | None
    raw_response: str | None = None
    usage: Usage = Usage()
    latency_ms: float = Field(default=0.0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    model_version: str | None = None
    error_kind: ErrorKind | None = None
    error_detail: str | None = None
    # Requests sent to the provider for this row (retries included; 0 = refused locally, e.g.
    # budget spent or circuit open). The daily call budget is the sum of this column.
    attempts: int = Field(default=1, ge=0)
    # The backend's answer-changing settings (canonical JSON), as hashed into `key`.
    settings: str = ""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @model_validator(mode="after")
    def _decision_xor_error(self) -> Self:
        if (self.decision is None) == (self.error_kind is None):
            raise ValueError("a journal entry holds either a decision or an error kind")
        return self

    def as_row(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "purpose": self.purpose.value,
            "backend": self.backend,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "request_json": self.request_json,
            "decision_json": self.decision.model_dump_json() if self.decision else None,
            "raw_response": self.raw_response,
            "prompt_tokens": self.usage.prompt_tokens,
            "output_tokens": self.usage.output_tokens,
            "thinking_tokens": self.usage.thinking_tokens,
            "cached_tokens": self.usage.cached_tokens,
            "latency_ms": self.latency_ms,
            "cost_usd": self.cost_usd,
            "model_version": self.model_version,
            "error_kind": self.error_kind.value if self.error_kind else None,
            "error_detail": self.error_detail,
            "attempts": self.attempts,
            "settings": self.settings,
            "created_at": self.created_at.isoformat(),
        }
