"""The oracle's side of the one daily budget: reservations that never cost a live decision.

Real google-genai against the fake Gemini, the real journal, and another SQLite connection
standing for another process that holds the journal's write lock.
- A journal locked by another process costs the live bot neither its deadline nor its call: the
  reservation waits at most half a second, then this process's own ledger decides (announced).
- A request in flight is reserved with its expected tokens and USD, until its own deadline.
- A recording stopped while a request waits for its reservation sends nothing and keeps nothing.
- A request cut off by a wedged loop is counted once (its row takes its reservation over).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llm_oracle.backends import Backend, BackendResult
from llm_oracle.backends.base import BackendIdentity
from llm_oracle.config import LimitsConfig, load_config
from llm_oracle.journal import Journal
from llm_oracle.models import Action, DecisionSource, ErrorKind, OracleDecision, OracleRequest
from llm_oracle.oracle import Oracle, Outcome
from tests.factories import make_request
from tests.fake_gemini import FakeGemini, Hang
from tests.gemini_helpers import fake_gemini_env, make_oracle


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    yield from fake_gemini_env(monkeypatch)


def _poll(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.01)


def _lock(path: Path) -> sqlite3.Connection:
    """Another process's write transaction on the journal (held until rolled back)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_a_locked_journal_costs_the_live_bot_neither_deadline_nor_call(
    tmp_path: Path, fake: FakeGemini
) -> None:
    oracle = make_oracle(tmp_path, fake)  # live, timeout_s 5 < the journal's busy timeout 10 s
    lock = _lock(tmp_path / "j.sqlite")
    try:
        outcome = oracle.decide_many([make_request()])[0]
        events = oracle.drain_events()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
        oracle.close()
    assert outcome.source is DecisionSource.BACKEND, outcome
    assert fake.count == 1
    assert any("journal reserve failed (locked)" in e for e in events), events
    with Journal(tmp_path / "j.sqlite", create=False) as j:
        assert j.count() == 1  # journaled once the lock was gone


def test_a_request_in_flight_is_reserved_with_its_cost_until_its_own_deadline(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.then(Hang())
    oracle = make_oracle(tmp_path, fake)
    done: list[Outcome] = []
    asked = datetime.now(UTC)
    thread = threading.Thread(target=lambda: done.extend(oracle.decide_many([make_request()])))
    thread.start()
    try:
        assert fake.wait_for(requests=1, timeout=10)
        with Journal(tmp_path / "j.sqlite", create=False) as j:
            rows = j.query("SELECT state, tokens, cost_usd, expires_at, owner FROM reservations")
    finally:
        fake.release()
        thread.join(timeout=30)
        oracle.close()
    assert len(rows) == 1
    state, tokens, usd, expires_at, owner = rows[0]
    assert state == "open" and int(tokens) > 0 and float(usd) > 0  # type: ignore[call-overload, arg-type]
    expires = datetime.fromisoformat(str(expires_at))
    # Its deadline is 5 s away (plus the oracle's margins), whatever a reader's timeout is.
    assert asked + timedelta(seconds=4) < expires < asked + timedelta(seconds=5 + 3)
    assert str(owner).split(":")[1] == str(os.getpid())
    assert done and done[0].source is DecisionSource.BACKEND
    with Journal(tmp_path / "j.sqlite", create=False) as j:
        assert j.reservations() == []  # the answer's row took it over


def test_a_recording_stopped_while_reserving_sends_nothing(
    tmp_path: Path, fake: FakeGemini
) -> None:
    oracle = make_oracle(tmp_path, fake, recording=True)
    lock = _lock(tmp_path / "j.sqlite")  # the reservation waits for this lock
    done: list[Outcome] = []
    thread = threading.Thread(target=lambda: done.extend(oracle.decide_many([make_request()])))
    try:
        thread.start()
        _poll(lambda: oracle._in_flight == 1, 10, "request in flight")
        oracle._stopping = True  # what `record` going away does (then the process exits)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    thread.join(timeout=30)
    oracle.close()
    assert fake.count == 0
    assert done and done[0].decision.reasoning == "recording stopped"
    with Journal(tmp_path / "j.sqlite", create=False) as j:
        assert j.reservations() == [] and j.count() == 0


class _Blocking(Backend):
    """A paid backend stuck in blocking code (it wedges the oracle's loop) for `block_s`."""

    limits = LimitsConfig(concurrency=1, rpm=60_000, rpm_burst=100)

    def __init__(self, block_s: float) -> None:
        self.identity = BackendIdentity("blocking", "b-1", "v1")
        self.block_s = block_s

    async def decide(self, request: OracleRequest, deadline: float | None = None) -> BackendResult:
        time.sleep(self.block_s)  # the bug under test: blocking code on the event loop
        decision = OracleDecision(action=Action.LONG, confidence=0.8, stop_loss=0.01)
        return BackendResult(decision=decision)


def test_a_wedged_request_is_counted_once(tmp_path: Path) -> None:
    """The candle gets the fallback at once; the request is counted once (the wedge row counts
    nothing: the request's task accounts for what it sent)."""
    config = load_config({"backend": "rules", "timeout_s": 1, "fallback": "hold"})
    oracle = Oracle(config, Journal(tmp_path / "j.sqlite"), _Blocking(block_s=3.0))
    try:
        outcome = oracle.decide_many([make_request()])[0]
    finally:
        oracle.close()
    assert outcome.error_kind is ErrorKind.TIMEOUT
    today = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), tzinfo=UTC)
    with Journal(tmp_path / "j.sqlite", create=False) as j:
        # Whether its answer row took the reservation over, or its cancellation kept the
        # reservation as one request sent (which of the two depends on when the loop frees).
        assert j.spend_since("blocking", today)[0] == 1
        kinds = j.query("SELECT error_kind, attempts FROM decisions ORDER BY id")
        assert ("timeout", 0) in kinds, kinds
