"""Daily spending caps (requests, tokens, USD), per UTC day, seeded from the journal.

The journal rows are the ledger: at start and at each new UTC day the spend so far is read back
from them (`load`), and every answer adds to it as it is recorded. Requests still in flight are
reserved, so the request cap holds exactly; tokens and USD are only known afterwards, so those
caps may be overshot by what the calls in flight cost.

This is one process's view. Across processes the journal decides (`Journal.reserve`, checked in
the oracle after this one); this ledger is what still holds while the journal cannot be written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from llm_oracle.config import BudgetConfig


@dataclass(frozen=True, slots=True)
class Spend:
    calls: int = 0
    tokens: int = 0
    usd: float = 0.0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.calls + other.calls, self.tokens + other.tokens, self.usd + other.usd)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DailyBudget:
    def __init__(
        self,
        config: BudgetConfig,
        load: Callable[[datetime], Spend],
        *,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.config = config
        self._load = load
        self._now = now
        self._day: date | None = None
        self.spent = Spend()
        self._reserved = 0

    def _roll(self) -> bool:
        """Start a new day's ledger when the UTC date changed; True when it did."""
        today = self._now().astimezone(UTC).date()
        if today == self._day:
            return False
        self._day = today
        self.spent = self._load(datetime.combine(today, time(0), tzinfo=UTC))
        return True

    def new_day(self) -> bool:
        return self._roll()

    def exhausted(self) -> str | None:
        """Which cap is spent (human-readable), or None while there is room for one more call."""
        self._roll()
        cfg, spent = self.config, self.spent
        if cfg.daily_calls is not None and spent.calls + self._reserved >= cfg.daily_calls:
            return f"requests {spent.calls + self._reserved}/{cfg.daily_calls}"
        if cfg.daily_tokens is not None and spent.tokens >= cfg.daily_tokens:
            return f"tokens {spent.tokens}/{cfg.daily_tokens}"
        if cfg.daily_usd is not None and spent.usd >= cfg.daily_usd:
            return f"USD {spent.usd:.4f}/{cfg.daily_usd:.2f}"
        return None

    def reserve(self) -> None:
        self._reserved += 1

    def settle(self, spend: Spend) -> None:
        """A reserved call came back: release its reservation and book what it cost."""
        self._reserved = max(0, self._reserved - 1)
        if self._roll():  # the call straddled midnight: today's ledger was just loaded from disk
            return
        self.spent = self.spent + spend
