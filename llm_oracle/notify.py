"""Short texts for Telegram / webhooks, and the daily oracle summary read from the journal.

The strategy sends these through Freqtrade's `dp.send_msg` (dry-run and live only). Messages
stay one line and short: a phone shows them in a notification. The daily summary is computed
from the journal's rows of the UTC day, not from in-process counters, so a restart during the
day still reports the whole day; what counts:
- decisions: answers recorded today, by purpose and action (a replayed answer is not a new one);
- calls, tokens, USD: what the rows account for (requests incl. retries; rules calls are free);
- errors: failed attempts by kind (each one was answered by the fallback);
- budget left: the paid backend's daily caps minus today's spend (its SpendGuard's own ledger).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from llm_oracle.config import BudgetConfig
from llm_oracle.journal import Journal

_REASON_CHARS = 160  # reasoning shown in a message; the trade's custom data keeps 500


def _clip(text: str, limit: int = _REASON_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def entry_text(
    pair: str,
    candidate: str,
    action: str,
    confidence: float,
    source: str,
    error: str | None,
    entered: bool,
    reasoning: str,
) -> str:
    via = f"{source}, {error}" if error else source
    verdict = "entry" if entered else "no entry"
    return (
        f"llm_oracle {pair}: {candidate} candidate -> {action} "
        f"(confidence {confidence:.2f}, {via}) {verdict}: {_clip(reasoning)}"
    )


def review_text(pair: str, action: str, confidence: float, exits: bool, reasoning: str) -> str:
    outcome = "exit now" if exits else "keep"
    return (
        f"llm_oracle {pair}: exit review -> {action} (confidence {confidence:.2f}) {outcome}: "
        f"{_clip(reasoning)}"
    )


def lock_text(until: datetime, reason: str) -> str:
    return f"llm_oracle: entries locked until {until:%Y-%m-%d %H:%M} UTC ({reason})"


def event_text(message: str) -> str:
    return f"llm_oracle: {message}"


# --- the daily summary -------------------------------------------------------------------------
class BudgetLeft(BaseModel):
    """What the paid backend may still spend today (None: that cap is off)."""

    model_config = ConfigDict(frozen=True)
    backend: str
    calls: int | None
    tokens: int | None
    usd: float | None


class DailySummary(BaseModel):
    model_config = ConfigDict(frozen=True)
    day: date
    entries: dict[str, int]  # action -> answers to entry candidates
    reviews: dict[str, int]  # action -> answers to exit reviews
    calls: int
    tokens: int
    usd: float
    errors: dict[str, int]
    budget_left: BudgetLeft | None  # None: no paid backend, nothing to spend

    @property
    def decisions(self) -> int:
        return sum(self.entries.values()) + sum(self.reviews.values())

    def text(self) -> str:
        def counts(by_action: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(by_action.items())) or "none"

        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        if self.budget_left is None:
            budget = "no paid backend"
        else:
            b = self.budget_left
            parts = [
                f"calls {b.calls}" if b.calls is not None else "calls unlimited",
                f"tokens {b.tokens}" if b.tokens is not None else "tokens unlimited",
                f"USD {b.usd:.2f}" if b.usd is not None else "USD unlimited",
            ]
            budget = f"{b.backend} " + ", ".join(parts)
        return (
            f"llm_oracle daily summary {self.day.isoformat()} UTC: "
            f"decisions {self.decisions} (entries: {counts(self.entries)}; "
            f"exit reviews: {counts(self.reviews)}), calls {self.calls}, tokens {self.tokens}, "
            f"USD {self.usd:.4f}, budget left: {budget}, errors: {errors}"
        )


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def daily_summary(
    journal: Journal,
    day: date,
    *,
    paid_backend: str | None = None,
    budget: BudgetConfig | None = None,
) -> DailySummary:
    """The summary of `day` (UTC) from the journal's rows, read-only."""
    start, end = day_bounds(day)
    rows = journal.query(
        "SELECT purpose, json_extract(decision_json, '$.action'), error_kind, backend, COUNT(*), "
        "COALESCE(SUM(attempts), 0), "
        "COALESCE(SUM(prompt_tokens + output_tokens + thinking_tokens), 0), "
        "COALESCE(SUM(cost_usd), 0) FROM decisions WHERE created_at >= ? AND created_at < ? "
        "GROUP BY 1, 2, 3, 4",
        (start.isoformat(), end.isoformat()),
    )
    entries: dict[str, int] = {}
    reviews: dict[str, int] = {}
    errors: dict[str, int] = {}
    calls = tokens = paid_calls = paid_tokens = 0
    usd = paid_usd = 0.0
    for purpose, action, error, backend, n, attempts, used, cost in rows:
        count, sent, spent = int(n), int(attempts), int(used)  # type: ignore[call-overload]
        calls, tokens, usd = calls + sent, tokens + spent, usd + float(cost)  # type: ignore[arg-type]
        if backend == paid_backend:  # what the budget counts (as journal.spend_since does)
            paid_calls, paid_tokens = paid_calls + sent, paid_tokens + spent
            paid_usd += float(cost)  # type: ignore[arg-type]
        if error is not None:
            errors[str(error)] = errors.get(str(error), 0) + count
            continue
        by_action = reviews if purpose == "exit_review" else entries
        by_action[str(action)] = by_action.get(str(action), 0) + count
    left = None
    if paid_backend is not None and budget is not None:
        left = BudgetLeft(
            backend=paid_backend,
            calls=_left(budget.daily_calls, paid_calls),
            tokens=_left(budget.daily_tokens, paid_tokens),
            usd=_left(budget.daily_usd, paid_usd),
        )
    return DailySummary(
        day=day,
        entries=entries,
        reviews=reviews,
        calls=calls,
        tokens=tokens,
        usd=usd,
        errors=errors,
        budget_left=left,
    )


def _left(cap: Any, spent: Any) -> Any:
    return None if cap is None else max(cap - spent, type(cap)(0))


def summary_due(now: datetime, at: str | None, last_sent: date | None) -> date | None:
    """The UTC day whose summary is due at `now`, or None.

    Due once per UTC day, from the configured time `at` ("HH:MM" UTC) on: a bot that was down at
    that time sends it when it is back the same day; a day already sent (the trades DB keeps
    it) is never sent twice, restarts included.
    """
    if at is None:
        return None
    now = now.astimezone(UTC)
    hour, minute = (int(part) for part in at.split(":"))
    if now.time() < time(hour, minute):
        return None
    today = now.date()
    return None if last_sent is not None and last_sent >= today else today
