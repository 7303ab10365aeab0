"""The oracle's spending gate: circuit breaker and daily budget in front of a paid backend.

`admit` runs before a request may be sent (after it got its concurrency slot, so at most
`concurrency` calls are ever admitted but unsettled); the oracle then reserves the request in the
journal, where the daily caps hold across processes, and `refuse_budget` takes back an admission
the journal refused; `settle` books the answer. Switching into or
out of a refusal is announced once through `announce` (log line + oracle event), never per
request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from llm_oracle.limits.breaker import BreakerState, CircuitBreaker
from llm_oracle.limits.budget import DailyBudget, Spend
from llm_oracle.models import ErrorKind


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: ErrorKind
    detail: str


class SpendGuard:
    def __init__(
        self,
        name: str,
        budget: DailyBudget,
        breaker: CircuitBreaker,
        *,
        fallback: str,
        announce: Callable[[int, str], None],
    ) -> None:
        self.name = name
        self.budget = budget
        self.breaker = breaker
        self.fallback = fallback
        self._announce = announce
        self._budget_spent: str | None = None

    def seed_breaker(
        self, recent: list[tuple[bool, datetime]], now: datetime | None = None
    ) -> None:
        """Restore the breaker from the newest calls in the journal (newest first)."""
        streak = 0
        for ok, _ in recent:
            if ok:
                break
            streak += 1
        if not streak:
            return
        age = ((now or datetime.now(UTC)) - recent[0][1]).total_seconds()
        self.breaker.seed(streak, age)
        if self.breaker.state is BreakerState.OPEN:
            self._announce(
                logging.WARNING,
                f"oracle {self.name}: circuit still open after {streak} consecutive failures "
                f"before the restart; answering with fallback '{self.fallback}' for "
                f"{self.breaker.seconds_left():.0f} s",
            )

    def admit(self) -> Refusal | None:
        """None: the call may go out (and is reserved). Otherwise why it may not."""
        if self.budget.new_day() and self._budget_spent:
            self._budget_spent = None
            self._announce(logging.INFO, f"oracle {self.name}: new UTC day, daily budget renewed")
        spent = self.budget.exhausted()
        if spent is not None:
            if self._budget_spent is None:
                self._budget_spent = spent
                self._announce(
                    logging.WARNING,
                    f"oracle {self.name}: daily budget exhausted ({spent}); answering with "
                    f"fallback '{self.fallback}' without calling until 00:00 UTC",
                )
            return Refusal(ErrorKind.BUDGET_EXHAUSTED, f"daily budget exhausted: {spent}")
        if not self.breaker.allow():
            return Refusal(
                ErrorKind.CIRCUIT_OPEN,
                f"circuit open after {self.breaker.consecutive_failures} consecutive failures; "
                f"next try in {self.breaker.seconds_left():.1f} s",
            )
        self.budget.reserve()
        return None

    def refuse_budget(self, spent: str) -> Refusal:
        """An admitted call that the shared budget (every process on the journal) refused:
        give its local reservation back, announce the switch once."""
        self.budget.settle(Spend())
        self.breaker.cancel_trial()
        if self._budget_spent is None:
            self._budget_spent = spent
            self._announce(
                logging.WARNING,
                f"oracle {self.name}: daily budget exhausted ({spent}, every process on the "
                f"journal counted); answering with fallback '{self.fallback}' without calling "
                "until 00:00 UTC",
            )
        return Refusal(ErrorKind.BUDGET_EXHAUSTED, f"daily budget exhausted: {spent}")

    def settle(self, spend: Spend, error: ErrorKind | None) -> None:
        """Book an admitted call's cost and result (after its journal row is committed)."""
        self.budget.settle(spend)
        if spend.calls == 0 and error is not None:
            # Nothing reached the provider (e.g. no request slot before the deadline): says
            # nothing about the provider's health.
            self.breaker.cancel_trial()
            return
        # Only service failures count: an unusable answer (content error) still proves the
        # provider answers, and asking other questions is fine.
        change = self.breaker.record(error is None or not error.is_service)
        if change is BreakerState.OPEN:
            self._announce(
                logging.WARNING,
                f"oracle {self.name}: circuit open after {self.breaker.consecutive_failures} "
                f"consecutive failures (last: {error.value if error else 'ok'}); answering with "
                f"fallback '{self.fallback}' without calling for {self.breaker.cooldown_s:.0f} s",
            )
        elif change is BreakerState.CLOSED:
            self._announce(
                logging.INFO, f"oracle {self.name}: circuit closed, the backend answers again"
            )
