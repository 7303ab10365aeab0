"""The daily oracle summary (from a real journal file) and when it is due; message texts."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from llm_oracle import notify
from llm_oracle.config import BudgetConfig
from llm_oracle.journal import Journal
from llm_oracle.models import (
    Action,
    ErrorKind,
    JournalEntry,
    OracleDecision,
    Purpose,
    Usage,
)

DAY = date(2026, 11, 21)
NOON = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def entry(
    n: int,
    *,
    purpose: Purpose = Purpose.ENTRY,
    action: Action | None = Action.LONG,
    error: ErrorKind | None = None,
    backend: str = "gemini",
    attempts: int = 1,
    at: datetime = NOON,
    cost: float = 0.001,
) -> JournalEntry:
    decision = None
    if action is not None:
        stop = 0.01 if action in (Action.LONG, Action.SHORT) else None
        decision = OracleDecision(action=action, confidence=0.7, stop_loss=stop, reasoning="r")
    return JournalEntry(
        key=hashlib.sha256(f"{n}".encode()).hexdigest(),
        purpose=purpose,
        backend=backend,
        model="m",
        prompt_version="p",
        request_json="{}",
        decision=decision,
        usage=Usage(prompt_tokens=100, output_tokens=20, thinking_tokens=5),
        cost_usd=cost,
        error_kind=error,
        error_detail="boom" if error else None,
        attempts=attempts,
        created_at=at,
    )


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    with Journal(tmp_path / "journal.sqlite") as j:
        yield j


def test_summary_counts_the_days_rows_and_what_the_budget_has_left(journal: Journal) -> None:
    journal.record_many(
        [
            entry(1, action=Action.LONG),
            entry(2, action=Action.HOLD),
            entry(3, action=Action.HOLD),
            entry(4, purpose=Purpose.EXIT_REVIEW, action=Action.EXIT, attempts=2),
            entry(5, action=None, error=ErrorKind.TIMEOUT, attempts=3, cost=0.0),
            entry(6, action=None, error=ErrorKind.BUDGET_EXHAUSTED, attempts=0, cost=0.0),
            entry(7, backend="rules", action=Action.SHORT, attempts=0, cost=0.0),
            # Not this UTC day: the day before and the day after.
            entry(8, at=datetime(2026, 11, 20, 23, 59, 59, tzinfo=UTC)),
            entry(9, at=datetime(2026, 11, 22, 0, 0, tzinfo=UTC)),
        ]
    )
    budget = BudgetConfig(daily_calls=10, daily_tokens=None, daily_usd=0.004)
    summary = notify.daily_summary(journal, DAY, paid_backend="gemini", budget=budget)
    assert summary.entries == {"long": 1, "hold": 2, "short": 1}
    assert summary.reviews == {"exit": 1}
    assert summary.decisions == 5
    assert summary.calls == 1 + 1 + 1 + 2 + 3
    assert summary.tokens == 7 * 125
    assert summary.usd == pytest.approx(0.004)
    assert summary.errors == {"timeout": 1, "budget_exhausted": 1}
    # gemini rows only: 8 requests of 10, tokens uncapped, USD spent to the cap (never below 0).
    left = summary.budget_left
    assert left is not None and (left.calls, left.tokens, left.usd) == (2, None, 0.0)
    text = summary.text()
    assert text.startswith("llm_oracle daily summary 2026-11-21 UTC: decisions 5 ")
    assert "calls 8, tokens 875, USD 0.0040" in text
    assert "budget left: gemini calls 2, tokens unlimited, USD 0.00" in text
    assert "errors: budget_exhausted 1, timeout 1" in text


def test_summary_of_a_day_without_rows_or_paid_backend(journal: Journal) -> None:
    summary = notify.daily_summary(journal, DAY)
    assert (summary.decisions, summary.calls, summary.tokens, summary.errors) == (0, 0, 0, {})
    assert summary.budget_left is None
    assert "budget left: no paid backend, errors: none" in summary.text()


@pytest.mark.parametrize(
    ("now", "last", "due"),
    [
        (datetime(2026, 11, 21, 23, 54, tzinfo=UTC), None, None),  # before the time
        (datetime(2026, 11, 21, 23, 55, tzinfo=UTC), None, DAY),  # at the time
        (datetime(2026, 11, 21, 23, 59, tzinfo=UTC), DAY - timedelta(days=3), DAY),
        (datetime(2026, 11, 21, 23, 59, tzinfo=UTC), DAY, None),  # sent today already
        (datetime(2026, 11, 22, 0, 5, tzinfo=UTC), DAY, None),  # the new day's time not yet
    ],
)
def test_the_summary_is_due_once_per_utc_day_from_its_time(
    now: datetime, last: date | None, due: date | None
) -> None:
    assert notify.summary_due(now, "23:55", last) == due


def test_no_summary_without_a_time() -> None:
    assert notify.summary_due(NOON, None, None) is None


def test_messages_are_one_short_line() -> None:
    long_reason = "word " * 200
    text = notify.entry_text(
        "BTC/USDT:USDT", "long", "hold", 0.55, "gemini", "timeout", False, long_reason
    )
    assert "\n" not in text and len(text) < 260
    assert text.startswith(
        "llm_oracle BTC/USDT:USDT: long candidate -> hold (confidence 0.55, gemini, timeout) "
        "no entry: word word"
    )
    review = notify.review_text("ETH/USDT:USDT", "exit", 0.9, True, "momentum gone")
    expected = (
        "llm_oracle ETH/USDT:USDT: exit review -> exit (confidence 0.90) exit now: momentum gone"
    )
    assert review == expected
