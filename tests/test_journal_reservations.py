"""The journal as the one budget of every process: reservations, caps, lost races, de-duplication.

Reservations are made under BEGIN IMMEDIATE: the day's rows plus everybody's reservations are
summed and the new one inserted in one transaction. An answer's row takes its reservation over;
an answer that lost a race keeps its reservation as `unrecorded`, with its cost. A question
another live process is asking is not reserved twice.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, time
from pathlib import Path

from llm_oracle.journal import SCHEMA_VERSION, Caps, Journal, owner_id
from llm_oracle.models import Action, JournalEntry, OracleDecision, Purpose, Usage

DAY = datetime.combine(datetime.now(UTC).date(), time(0), tzinfo=UTC)
KEY = "ab" * 32


def answer(key: str, cost: float = 0.01, attempts: int = 1) -> JournalEntry:
    return JournalEntry(
        key=key,
        purpose=Purpose.ENTRY,
        backend="gemini",
        model="m",
        prompt_version="p",
        request_json="{}",
        decision=OracleDecision(action=Action.LONG, confidence=0.8, stop_loss=0.01),
        usage=Usage(prompt_tokens=400, output_tokens=80),
        cost_usd=cost,
        attempts=attempts,
    )


def test_caps_count_every_connection_and_retries(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as a, Journal(path) as b:
        caps = Caps(calls=3)
        first = a.reserve("gemini", DAY, caps, key="1" * 64)
        assert first.id is not None and first.calls == 0
        assert b.reserve("gemini", DAY, caps, key="2" * 64).calls == 1
        retry = a.reserve("gemini", DAY, caps, extend=first.id)  # a retry of the first
        assert retry.id == first.id and retry.calls == 2
        refused = b.reserve("gemini", DAY, caps, key="3" * 64)
        assert refused.id is None and refused.exhausted == "requests 3/3"
        assert a.reserve("rules", DAY, caps).id is not None  # another backend, another budget
        # The answer's row takes the reservation over: still 3 requests, none double counted.
        assert a.record_many([answer("1" * 64, attempts=2)], reservations={"1" * 64: first.id})
        assert a.spend_since("gemini", DAY)[0] == 3
        assert [r[1:4] for r in a.reservations("gemini")] == [("open", 1, 1)]


def test_an_answer_that_lost_the_race_keeps_its_cost(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as a, Journal(path) as b:
        ra = a.reserve("gemini", DAY, Caps(), key=KEY, dedupe=False)
        rb = b.reserve("gemini", DAY, Caps(), key=KEY, dedupe=False)
        assert a.record_many([answer(KEY, 0.01)], reservations={KEY: ra.id}) == 1  # type: ignore[dict-item]
        assert b.record_many([answer(KEY, 0.02)], reservations={KEY: rb.id}) == 0  # type: ignore[dict-item]
        calls, tokens, usd = a.spend_since("gemini", DAY)
        assert (calls, tokens) == (2, 960) and abs(usd - 0.03) < 1e-12
        assert a.reservations("gemini") == [("gemini", "unrecorded", 1, 1, 0.02)]
        assert a.count() == 1


_HOLDER = """
import sys
from datetime import UTC, datetime
from llm_oracle.journal import Caps, Journal
with Journal(sys.argv[1]) as j:
    print(j.reserve("gemini", datetime.now(UTC), Caps(), key=sys.argv[2]).id, flush=True)
    sys.stdin.read()  # hold the reservation until the test closes stdin
"""


def test_a_question_another_live_process_asks_is_not_reserved_twice(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), KEY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        other = int(holder.stdout.readline())
        with Journal(path) as j:
            found = j.reserve("gemini", DAY, Caps(), key=KEY)
            assert found.id is None and found.asked_by == other
            assert j.reservation_open(other)
            assert j.reserve("gemini", DAY, Caps(), key="cd" * 32).id is not None
            assert holder.stdin is not None
            holder.stdin.close()
            assert holder.wait(timeout=30) == 0
            # Its process ended without an answer: the question may be asked here now.
            assert not j.reservation_open(other)
            mine = j.reserve("gemini", DAY, Caps(), key=KEY)
            assert mine.id is not None
            j.record_many([answer(KEY)], reservations={KEY: mine.id})
            assert j.reserve("gemini", DAY, Caps(), key=KEY).answered
    finally:
        if holder.poll() is None:
            holder.kill()


def test_open_reservations_count_their_estimated_tokens_and_usd(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as a, Journal(path) as b:
        caps = Caps(tokens=1000, usd=1.0)
        first = a.reserve("gemini", DAY, caps, key="1" * 64, estimate=(600, 0.1))
        # Another process sees the first request's expected cost before its answer exists.
        second = b.reserve("gemini", DAY, caps, key="2" * 64, estimate=(600, 0.1))
        assert first.id is not None and second.id is not None and second.tokens == 600
        refused = b.reserve("gemini", DAY, caps, key="3" * 64, estimate=(600, 0.1))
        assert refused.id is None and refused.exhausted == "tokens 1200/1000"
        # The answer's row replaces the estimate with what it cost (480 tokens).
        a.record_many([answer("1" * 64)], reservations={"1" * 64: first.id})
        assert a.spend_since("gemini", DAY)[1] == 480 + 600
        usd_caps = Caps(usd=0.05)
        assert b.reserve("gemini", DAY, usd_caps, key="4" * 64).exhausted == "USD 0.1100/0.05"


_ASKER = """
import sys
from datetime import UTC, datetime
from llm_oracle.journal import Caps, Journal
with Journal(sys.argv[1]) as j:
    r = j.reserve("gemini", datetime.now(UTC), Caps(), key=sys.argv[2], expires_s=0.0)
    print(r.id, flush=True)
    sys.stdin.readline()  # the test says: a retry, asked for another 600 s
    j.reserve("gemini", datetime.now(UTC), Caps(), extend=r.id, expires_s=600.0)
    print("extended", flush=True)
    sys.stdin.read()
"""


def test_the_owner_says_how_long_it_asks_and_a_retry_extends_it(tmp_path: Path) -> None:
    """A reader judges another process's question by the owner's own deadline (expires_at),
    never by its own timeout; a retry (extend) refreshes it."""
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", _ASKER, str(path), KEY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        other = int(holder.stdout.readline())
        with Journal(path) as j:
            # Alive, but its deadline has passed: nobody waits for it.
            assert not j.reservation_open(other)
            holder.stdin.write("retry\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "extended"
            assert j.reservation_open(other)
            assert j.reserve("gemini", DAY, Caps(), key=KEY).asked_by == other
            holder.stdin.close()
            assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_reused_pid_is_not_the_owner(tmp_path: Path) -> None:
    """The owner is host:pid:process start: a live process that got a dead owner's pid does
    not keep its question open."""
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        mine = owner_id()
        host, pid, start = mine.split(":")
        assert start  # /proc is there on the test machine
        stranger = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        try:
            with j._transaction() as conn:
                for owner in (f"{host}:{stranger.pid}:1", f"{host}:{stranger.pid}:"):
                    conn.execute(
                        "INSERT INTO reservations (backend, pid, created_at, key, expires_at, "
                        "owner) VALUES ('gemini', ?, ?, ?, ?, ?)",
                        (
                            stranger.pid,
                            datetime.now(UTC).isoformat(),
                            owner[-1] * 64,
                            "9999-01-01T00:00:00+00:00",
                            owner,
                        ),
                    )
            ids = [int(r[0]) for r in j.query("SELECT id FROM reservations ORDER BY id")]  # type: ignore[call-overload]
            assert not j.reservation_open(ids[0])  # same pid, another start time: gone
            assert j.reservation_open(ids[1])  # no start time known: the pid decides
        finally:
            stranger.kill()
            stranger.wait()
        assert not j.reservation_open(ids[1])


def test_a_v4_journal_migrated_forward_reserves_and_keeps_batch_jobs(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    conn = sqlite3.connect(path)  # back to schema 4: no batch tables, no v6 columns
    for statement in (
        "DROP TABLE batch_jobs",
        "DROP TABLE batch_requests",
        "ALTER TABLE reservations DROP COLUMN expires_at",
        "ALTER TABLE reservations DROP COLUMN owner",
        "ALTER TABLE decisions DROP COLUMN run",
        "PRAGMA user_version = 4",
    ):
        conn.execute(statement)
    conn.commit()
    conn.close()
    with Journal(path) as j:
        assert j.schema_version() == SCHEMA_VERSION
        held = j.reserve("gemini", DAY, Caps(calls=5), key=KEY, estimate=(100, 0.01))
        assert held.id is not None
        j.add_batch_job("batches/x", "gemini", "m", [(KEY, "{}", held.id)])
        assert j.open_batch_jobs("gemini", "m") == ["batches/x"]
        assert j.batch_requests("batches/x") == [(KEY, "{}", held.id)]
        j.run = "run-1"
        j.record_many([answer(KEY)], reservations={KEY: held.id})
        assert j.query("SELECT run FROM decisions") == [("run-1",)]
        assert j.reservations() == []
