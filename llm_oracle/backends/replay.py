"""Replay: answers come from the journal only.

The journal lookup itself is the cache layer every backend shares (`llm_oracle.oracle`), so this
backend is only reached on a miss, and decides what a miss means: `hold` (no trade), `rules`
(a local answer, used once, not recorded under the source's name) or `call:<backend>` (ask the
source backend and record the answer, which is how decisions are recorded over history).
"""

from __future__ import annotations

from llm_oracle.backends.base import Backend, BackendResult
from llm_oracle.backends.rules import RulesBackend
from llm_oracle.models import OracleDecision, OracleRequest


class ReplayBackend(Backend):
    def __init__(self, source: Backend, on_miss: str, rules: RulesBackend) -> None:
        # The identity of what is replayed, so keys match the rows the source recorded.
        self.identity = source.identity
        # Only a miss that calls the source spends anything.
        self.limits = source.limits if on_miss.startswith("call:") else None
        # A question the source could not answer stays unanswerable in replay too.
        self.max_invalid_answers = source.max_invalid_answers
        self.source = source
        self.on_miss = on_miss
        self.rules = rules

    async def decide(self, request: OracleRequest, deadline: float | None = None) -> BackendResult:
        if self.on_miss.startswith("call:"):
            return await self.source.decide(request, deadline)
        if self.on_miss == "rules":
            return BackendResult(decision=self.rules.decide_now(request), record=False)
        return BackendResult(decision=OracleDecision.hold("replay miss"), record=False)

    async def aclose(self) -> None:
        await self.source.aclose()
