"""Limits on their own, on injected clocks: rate limiter, circuit breaker, daily budget, and the
journal they are seeded from (schema migration, spend queries)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llm_oracle.config import BudgetConfig
from llm_oracle.journal import APPLICATION_ID, SCHEMA_VERSION, Journal
from llm_oracle.limits import CircuitBreaker, DailyBudget, RateLimiter, Spend, acquire_before
from llm_oracle.limits.breaker import BreakerState
from llm_oracle.models import Action, ErrorKind, JournalEntry, OracleDecision, Purpose, Usage


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# --- rate limiter ------------------------------------------------------------------------------
def test_token_bucket_allows_burst_then_rpm() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=120, burst=3, clock=clock, sleep=clock.sleep)  # 2 per second

    async def take(n: int) -> list[float]:
        stamps = []
        for _ in range(n):
            assert await limiter.acquire()
            stamps.append(clock.now)
        return stamps

    stamps = asyncio.run(take(7))
    assert stamps[:3] == [1000.0] * 3  # the burst
    gaps = [b - a for a, b in zip(stamps[2:], stamps[3:], strict=False)]
    assert gaps == pytest.approx([0.5] * 4)
    # Over any window the count never exceeds burst + rate * window.
    assert len(stamps) <= 3 + 2 * (stamps[-1] - stamps[0]) + 1e-9


def test_token_bucket_gives_up_at_the_deadline_without_sleeping_in_vain() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, burst=1, clock=clock, sleep=clock.sleep)

    async def run() -> tuple[bool, bool, bool]:
        first = await limiter.acquire(deadline=clock.now + 0.1)
        second = await limiter.acquire(deadline=clock.now + 0.5)  # next token in 1 s
        third = await limiter.acquire(deadline=clock.now + 1.5)
        return first, second, third

    assert asyncio.run(run()) == (True, False, True)
    assert clock.slept == [pytest.approx(1.0)]  # only the waiter that could make it slept


def test_acquire_before_times_out_on_a_held_semaphore() -> None:
    async def run() -> tuple[bool, bool]:
        sem = asyncio.Semaphore(1)
        loop = asyncio.get_running_loop()
        assert await acquire_before(sem, None)
        held = await acquire_before(sem, loop.time() + 0.05)
        sem.release()
        free = await acquire_before(sem, loop.time() - 1)  # past deadline, but free: take it
        return held, free

    assert asyncio.run(run()) == (False, True)


# --- circuit breaker ---------------------------------------------------------------------------
def test_breaker_opens_after_k_failures_half_opens_once_and_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, cooldown_s=60, clock=clock)
    assert [breaker.record(False) for _ in range(2)] == [None, None]
    assert breaker.allow() and breaker.state is BreakerState.CLOSED
    assert breaker.record(False) is BreakerState.OPEN
    assert not breaker.allow() and breaker.seconds_left() == 60
    clock.now += 59.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the one trial
    assert not breaker.allow()  # no second call while the trial is out
    assert breaker.record(False) is None  # trial failed: open again, silently
    assert breaker.state is BreakerState.OPEN and breaker.seconds_left() == 60
    clock.now += 60
    assert breaker.allow()
    assert breaker.record(True) is BreakerState.CLOSED
    assert breaker.allow() and breaker.consecutive_failures == 0


def test_breaker_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failures=2, cooldown_s=1, clock=FakeClock())
    breaker.record(False)
    breaker.record(True)
    assert breaker.record(False) is None and breaker.state is BreakerState.CLOSED


def test_breaker_seed_restores_remaining_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, cooldown_s=60, clock=clock)
    breaker.seed(consecutive_failures=4, seconds_since_last=45)
    assert breaker.state is BreakerState.OPEN and breaker.seconds_left() == pytest.approx(15)
    stale = CircuitBreaker(failures=3, cooldown_s=60, clock=clock)
    stale.seed(consecutive_failures=3, seconds_since_last=600)
    assert stale.state is BreakerState.HALF_OPEN and stale.allow()  # one trial, not a flood
    assert not stale.allow()


# --- daily budget ------------------------------------------------------------------------------
def test_budget_counts_reservations_rolls_over_at_utc_midnight() -> None:
    now = datetime(2025, 6, 6, 23, 59, tzinfo=UTC)
    loads: list[datetime] = []

    def load(since: datetime) -> Spend:
        loads.append(since)
        return Spend(calls=1, tokens=100, usd=0.01) if since.day == 6 else Spend()

    budget = DailyBudget(
        BudgetConfig(daily_calls=3, daily_tokens=None, daily_usd=None), load, now=lambda: now
    )
    assert budget.exhausted() is None and loads == [datetime(2025, 6, 6, tzinfo=UTC)]
    budget.reserve()
    budget.reserve()
    assert budget.exhausted() == "requests 3/3"  # two in flight count already
    budget.settle(Spend(calls=1))
    assert budget.exhausted() == "requests 3/3"
    budget.settle(Spend(calls=1))
    assert budget.spent.calls == 3
    now = now + timedelta(minutes=2)
    assert budget.exhausted() is None and budget.spent == Spend()
    assert loads[-1] == datetime(2025, 6, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("config", "spent", "message"),
    [
        (
            BudgetConfig(daily_calls=None, daily_tokens=1000, daily_usd=None),
            Spend(1, 1000, 0),
            "tokens",
        ),
        (BudgetConfig(daily_calls=None, daily_tokens=None, daily_usd=1.0), Spend(1, 1, 1.0), "USD"),
        (
            BudgetConfig(daily_calls=None, daily_tokens=None, daily_usd=None),
            Spend(10**6, 10**9, 1e6),
            None,
        ),
    ],
)
def test_budget_caps(config: BudgetConfig, spent: Spend, message: str | None) -> None:
    budget = DailyBudget(config, lambda since: spent)
    result = budget.exhausted()
    assert (result is None) if message is None else (message in str(result))


# --- journal: spend queries and the migrations from v1 ------------------------------------------
def _entry(
    seed: int, *, backend: str = "gemini", error: ErrorKind | None = None, **kw: object
) -> JournalEntry:
    return JournalEntry(
        key=f"{seed:064x}",
        purpose=Purpose.ENTRY,
        backend=backend,
        model="m",
        prompt_version="v1",
        request_json="{}",
        decision=None if error else OracleDecision(action=Action.HOLD, confidence=0.5),
        error_kind=error,
        usage=Usage(prompt_tokens=100, output_tokens=10, thinking_tokens=5),
        cost_usd=0.001,
        **kw,  # type: ignore[arg-type]
    )


def test_spend_since_and_recent_calls(tmp_path: Path) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.record_many(
            [
                _entry(1, created_at=today - timedelta(hours=1)),  # yesterday: not counted
                _entry(2, attempts=3),
                _entry(3, error=ErrorKind.SERVER_ERROR),
                _entry(4, error=ErrorKind.BUDGET_EXHAUSTED, attempts=0),
                _entry(5, backend="rules"),
            ]
        )
        calls, tokens, usd = journal.spend_since("gemini", today)
        assert (calls, tokens) == (4, 3 * 115) and usd == pytest.approx(0.003)
        recent = journal.recent_calls("gemini", 5)
        assert [ok for ok, _ in recent] == [False, True, True]  # refusals are not calls


V1_SCHEMA = """
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, purpose TEXT NOT NULL,
    backend TEXT NOT NULL, model TEXT NOT NULL, prompt_version TEXT NOT NULL,
    request_json TEXT NOT NULL, decision_json TEXT, raw_response TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    thinking_tokens INTEGER NOT NULL DEFAULT 0, cached_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, model_version TEXT,
    error_kind TEXT, error_detail TEXT, created_at TEXT NOT NULL,
    CHECK ((decision_json IS NULL) <> (error_kind IS NULL))
);
CREATE UNIQUE INDEX decisions_answer_by_key ON decisions(key) WHERE error_kind IS NULL;
CREATE INDEX decisions_by_key ON decisions(key);
CREATE INDEX decisions_by_created ON decisions(created_at);
"""


def test_v1_journal_is_migrated_forward_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    decision = OracleDecision(action=Action.HOLD, confidence=0.5).model_dump_json()
    conn.execute(
        "INSERT INTO decisions (key, purpose, backend, model, prompt_version, request_json, "
        "decision_json, created_at) VALUES (?, 'entry', 'rules', 'rules-v1', 'none', '{}', ?, ?)",
        (f"{7:064x}", decision, datetime.now(UTC).isoformat()),
    )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    with Journal(path) as journal:
        assert journal.lookup([f"{7:064x}"])[f"{7:064x}"].action is Action.HOLD
        assert journal.query("SELECT attempts FROM decisions") == [(1,)]
        assert journal.record(_entry(8, attempts=2))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    conn.close()
    with Journal(path) as again:  # opening a migrated file changes nothing
        assert again.count() == 2
