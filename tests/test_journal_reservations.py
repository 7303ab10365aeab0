"""The journal as the one budget of every process: reservations, caps, lost races, de-duplication.

Reservations are made under BEGIN IMMEDIATE: the day's rows plus everybody's reservations are
summed and the new one inserted in one transaction. An answer's row takes its reservation over;
an answer that lost a race keeps its reservation as `unrecorded`, with its cost. A question
another live process is asking is not reserved twice.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, time
from pathlib import Path

from llm_oracle.journal import Caps, Journal
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
