"""Batch jobs that go wrong: a refused create, a lost create answer, a job the provider forgot.

`BatchRecorder` against the fake Gemini (google-genai's real batch calls, the real journal).
The job is journaled as an intent under a unique display name before it is created, so:
- a refused create gives its reservations back at once (they would block every process's daily
  budget until 00:00 UTC) and leaves no job to collect;
- a create whose answer is lost (or a `record` killed in between) is found again by its display
  name (`batches.list`) and collected, never submitted (paid) twice;
- an intent that never became a job is dropped on resume, its reservations given back;
- a journaled job the provider no longer knows (404) fails its questions once, not every run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from google.genai import errors

from llm_oracle.backends.gemini import GeminiBackend
from llm_oracle.config import load_config
from llm_oracle.journal import Caps, Journal
from llm_oracle.record.batch import CREATING, BatchRecorder, Questions
from tests.fake_gemini import FakeGemini
from tests.gemini_helpers import fake_gemini_env, gemini_config, requests_n

MODEL = "gemini-3.8-flash"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    yield from fake_gemini_env(monkeypatch)


def _recorder(
    fake: FakeGemini,
    journal: Journal,
    caps: Caps | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> BatchRecorder:
    cfg = load_config(gemini_config(fake, timeout_s=2))
    said: list[str] = []
    return BatchRecorder(
        GeminiBackend(cfg.gemini, cfg.timeout_s),
        journal,
        caps or Caps(),
        poll_s=0.01,
        stop=stop,
        say=said.append,
    )


def _questions(recorder: BatchRecorder, n: int) -> Questions:
    questions = Questions()
    for request in requests_n(n):
        questions.requests[recorder.backend.identity.key(request)] = request
    return questions


def test_a_refused_create_gives_the_reservations_back(tmp_path: Path, fake: FakeGemini) -> None:
    fake.batch_create_failures = 1
    with Journal(tmp_path / "j.sqlite") as journal:
        recorder = _recorder(fake, journal, Caps(calls=3))
        questions = _questions(recorder, 3)
        held, exhausted = recorder.reserve(questions)
        assert len(held) == 3 and exhausted is None
        # Reserved with what they are expected to cost (the token and USD caps see them).
        assert journal.query("SELECT MIN(tokens), MIN(cost_usd) FROM reservations")[0][0] > 0  # type: ignore[operator]
        with pytest.raises(errors.ClientError):
            asyncio.run(recorder.submit(questions, held))
        assert journal.reservations() == []
        assert journal.open_batch_jobs("gemini", MODEL) == []
        # The whole day's budget is there again, for this and every other process.
        assert len(recorder.reserve(questions)[0]) == 3
    assert fake.batch_jobs == {}


def test_a_job_whose_create_answer_was_lost_is_found_and_collected_once(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.batch_create_hang = True  # created at the provider; its answer never arrives
    fake.batch_polls = 1
    with Journal(tmp_path / "j.sqlite") as journal:
        recorder = _recorder(fake, journal)
        questions = _questions(recorder, 2)
        held, _ = recorder.reserve(questions)
        name = asyncio.run(recorder.submit(questions, held))
        assert name == "batches/fake1" and list(fake.batch_jobs) == [name]
        assert journal.open_batch_jobs("gemini", MODEL) == [name]
        found = asyncio.run(recorder.collect(name))
        assert found is not None and (found.answers, found.failed) == (2, 0)
        assert journal.count() == 2 and journal.reservations() == []
    assert len(fake.batch_jobs) == 1  # never submitted (paid) twice


def test_resume_adopts_a_created_intent_and_drops_one_never_created(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.batch_polls = 1
    with Journal(tmp_path / "j.sqlite") as journal:
        recorder = _recorder(fake, journal)
        questions = _questions(recorder, 4)
        held, _ = recorder.reserve(questions)
        keys = list(held)
        rows = [(k, questions.requests[k].canonical_json(), held[k]) for k in keys]
        # Two runs that died right after journaling their intent: one job reached Google.
        journal.add_batch_job("llm-oracle-record-a", "gemini", MODEL, rows[:2], state=CREATING)
        journal.add_batch_job("llm-oracle-record-b", "gemini", MODEL, rows[2:], state=CREATING)
        fake.batch_jobs["batches/fake1"] = (MODEL, [], 0)
        fake.batch_display_names["batches/fake1"] = "llm-oracle-record-a"
        assert asyncio.run(recorder.resume_jobs()) == ["batches/fake1"]
        assert journal.batch_requests("batches/fake1") == rows[:2]
        # The never-created job's two reservations went back; the adopted job's two stay.
        assert [r[1:4] for r in journal.reservations()] == [("open", 2, 2)]


def test_a_job_the_provider_does_not_know_fails_once_and_is_finished(
    tmp_path: Path, fake: FakeGemini
) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        recorder = _recorder(fake, journal)
        questions = _questions(recorder, 2)
        held, _ = recorder.reserve(questions)
        rows = [(k, questions.requests[k].canonical_json(), held[k]) for k in held]
        journal.add_batch_job("batches/gone", "gemini", MODEL, rows)
        found = asyncio.run(recorder.collect("batches/gone"))
        assert found is not None and found.state == "NOT_FOUND" and found.failed == 2
        assert journal.open_batch_jobs("gemini", MODEL) == []
        assert asyncio.run(recorder.resume_jobs()) == []


def test_a_job_collected_the_next_day_is_charged_to_its_reservation_day(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.batch_polls = 1
    with Journal(tmp_path / "j.sqlite") as journal:
        recorder = _recorder(fake, journal)
        questions = _questions(recorder, 2)
        held, _ = recorder.reserve(questions)
        name = asyncio.run(recorder.submit(questions, held))
        yesterday = datetime.now(UTC) - timedelta(days=1)
        with journal._transaction() as conn:  # the job was reserved and submitted yesterday
            conn.execute("UPDATE reservations SET created_at = ?", (yesterday.isoformat(),))
        asyncio.run(recorder.collect(name))
        today = datetime.combine(datetime.now(UTC).date(), time(0), tzinfo=UTC)
        assert journal.spend_since("gemini", today)[0] == 0
        assert journal.spend_since("gemini", today - timedelta(days=1))[0] == 2


def test_a_partly_successful_job_is_done_and_collected(tmp_path: Path, fake: FakeGemini) -> None:
    fake.batch_polls = 1
    fake.batch_final_state = "JOB_STATE_PARTIALLY_SUCCEEDED"
    with Journal(tmp_path / "j.sqlite") as journal:
        looks = iter(range(100))
        # A job never seen as done would stop polling here (and fail below).
        recorder = _recorder(fake, journal, stop=lambda: next(looks, 100) >= 99)
        questions = _questions(recorder, 2)
        held, _ = recorder.reserve(questions)
        name = asyncio.run(recorder.submit(questions, held))
        found = asyncio.run(recorder.collect(name))
        assert found is not None and found.state == "JOB_STATE_PARTIALLY_SUCCEEDED"
        assert found.answers == 2 and journal.open_batch_jobs("gemini", MODEL) == []
