"""The one interface every backend implements, and what a backend call returns.

A backend turns an `OracleRequest` into a `BackendResult`. It never touches the journal: caching,
recording, the spending gate, concurrency and fallback live in `llm_oracle.oracle`, so every
backend gets them for free and a new provider is one new module plus one registry line.

Deadlines: the oracle passes `deadline`, an absolute `asyncio` loop time by which the answer must
be back (live trading), or None when recording over history. With None the backend bounds its
own work to the oracle's `timeout_s`, counted from its first request (waiting for a rate-limit
slot is not part of it). A backend must never sleep or retry past its deadline: it owns the
deadline, so the attempts, error kind and cost it reports are exact (the oracle only steps in,
after a grace period, for a backend that ignores it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from llm_oracle.config import LimitsConfig
from llm_oracle.models import ErrorKind, OracleDecision, OracleRequest, Usage
from llm_oracle.prompt import decision_key


@dataclass(frozen=True, slots=True)
class BackendIdentity:
    """What makes two answers comparable: all of it goes into the decision key."""

    name: str
    model: str
    prompt_version: str
    # Canonical JSON of every setting that can change an answer (see prompt.canonical_settings).
    settings: str = ""

    def key(self, request: OracleRequest) -> str:
        return decision_key(request, self.name, self.model, self.prompt_version, self.settings)


class BackendResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    decision: OracleDecision | None
    raw_response: str | None = None
    usage: Usage = Usage()
    latency_ms: float = Field(default=0.0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    model_version: str | None = None
    error_kind: ErrorKind | None = None
    error_detail: str | None = None
    # Requests sent to the provider (retries included); 0 when refused before sending.
    attempts: int = Field(default=1, ge=0)
    # False for answers that stand in for a missing decision (replay miss answered by hold or
    # rules): they are used once and never written to the journal as if the source had said them.
    record: bool = True


def failure(kind: ErrorKind, detail: str, *, attempts: int = 1, **extra: object) -> BackendResult:
    return BackendResult(
        decision=None, error_kind=kind, error_detail=detail, attempts=attempts, **extra
    )


class Backend(ABC):
    identity: BackendIdentity
    # Limits of a paid service (concurrency, rpm, budget, breaker); None = local and free.
    limits: LimitsConfig | None = None
    # After this many unusable answers to one question it is not asked again (None = no limit).
    max_invalid_answers: int | None = None

    @abstractmethod
    async def decide(self, request: OracleRequest, deadline: float | None = None) -> BackendResult:
        """Answer one request. Errors are returned as a result with `error_kind`, not raised."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release network clients; the oracle calls it on shutdown."""
