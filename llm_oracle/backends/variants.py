"""The `variant` backend: answers from a decision table, for `llm-oracle report` only.

A variant (every candidate confirmed, the oracle inverted, a placebo seed, ...) is the replay
source's recorded decisions rearranged by the report, written to a JSON table keyed by the
source's decision keys. A backtest with `backend: variant` then trades exactly that table with
the unchanged strategy and money rules. Nothing is ever sent to a provider and nothing is
journaled (`record=False`): the variant's own identity keeps its keys apart from recorded rows.

Exit reviews of the variant's trades are answered from the source's recorded reviews when the
same question was recorded (same trade, same candle), else by `variant.review_miss`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from llm_oracle.backends.base import Backend, BackendIdentity, BackendResult
from llm_oracle.backends.rules import RulesBackend
from llm_oracle.config import FallbackPolicy, OracleConfigError
from llm_oracle.models import OracleDecision, OracleRequest, Purpose

VARIANT_BACKEND = "variant"


class SourceIdentity(BaseModel):
    """Whose keys the table holds; checked against the configured replay source."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    model: str
    prompt_version: str
    settings: str = ""

    @classmethod
    def of(cls, identity: BackendIdentity) -> SourceIdentity:
        return cls(
            name=identity.name,
            model=identity.model,
            prompt_version=identity.prompt_version,
            settings=identity.settings,
        )


class DecisionTable(BaseModel):
    """One variant: entry decisions by source key (None = hold), recorded exit reviews."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    source: SourceIdentity
    entries: dict[str, OracleDecision | None]
    reviews: dict[str, OracleDecision] = {}

    def write(self, path: Path) -> Path:
        path.write_text(self.model_dump_json(exclude_none=False), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> DecisionTable:
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except (OSError, ValidationError) as exc:
            raise OracleConfigError(
                f"llm_oracle.variant.table: cannot read {path}: {exc}"
            ) from None


class VariantBackend(Backend):
    def __init__(
        self,
        source: Backend,
        table: DecisionTable,
        review_miss: FallbackPolicy,
        rules: RulesBackend,
    ) -> None:
        wanted = SourceIdentity.of(source.identity)
        if table.source != wanted:
            raise OracleConfigError(
                f"llm_oracle.variant.table {table.name!r} holds decisions of "
                f"{table.source.name}/{table.source.model}, not of the replay source "
                f"{wanted.name}/{wanted.model} with these settings"
            )
        self.source_identity = source.identity
        digest = hashlib.sha256(table.model_dump_json().encode()).hexdigest()[:16]
        # Keys of its own: a variant's answers can never be taken for the source's recorded ones.
        self.identity = BackendIdentity(
            name=VARIANT_BACKEND,
            model=f"{table.name}@{source.identity.model}",
            prompt_version=source.identity.prompt_version,
            settings=digest,
        )
        self.table = table
        self.review_miss = review_miss
        self.rules = rules
        # What the report shows next to the variant's result.
        self.entry_hits = self.entry_misses = self.review_hits = self.review_misses = 0
        self.review_keys: set[str] = set()

    async def decide(self, request: OracleRequest, deadline: float | None = None) -> BackendResult:
        return BackendResult(decision=self.decide_now(request), attempts=0, record=False)

    def decide_now(self, request: OracleRequest) -> OracleDecision:
        key = self.source_identity.key(request)
        if request.purpose is Purpose.ENTRY:
            if key not in self.table.entries:
                self.entry_misses += 1
                return OracleDecision.hold("variant: candidate not in the table")
            self.entry_hits += 1
            return self.table.entries[key] or OracleDecision.hold(f"variant {self.table.name}")
        self.review_keys.add(key)
        recorded = self.table.reviews.get(key)
        if recorded is not None:
            self.review_hits += 1
            return recorded
        self.review_misses += 1
        if self.review_miss is FallbackPolicy.RULES:
            return self.rules.decide_now(request)
        return OracleDecision.hold("variant: exit review not recorded")
