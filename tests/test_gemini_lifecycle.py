"""Exact questions, one deadline owner and the model lifecycle, through the real google-genai
client against the fake endpoint on loopback.

- Unusable answers (content errors) are journaled and counted, never open the breaker, and a
  question that got `max_invalid_answers` of them is not asked (or paid for) again.
- A 503 followed by a hang is two attempts and a server error, not one timeout.
- 408 is retried like Google's SDK does; 501 is not.
- An answer from another model than the configured one is never stored as the configured
  model's answer; it is announced once and counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_oracle.backends.gemini import RETRIED_CODES, same_model
from llm_oracle.config import load_config
from llm_oracle.journal import Journal
from llm_oracle.models import Action, DecisionSource, ErrorKind
from llm_oracle.oracle import Oracle
from tests.factories import make_request
from tests.fake_gemini import MODEL_VERSION, Custom, FakeGemini, Hang, Ok, ServerError
from tests.gemini_helpers import (
    all_rows,
    fake_gemini_env,
    gemini_config,
    make_oracle,
    requests_n,
)

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")

WRONG_SIDE = Custom({"action": "short", "confidence": 0.9, "stop_loss": 0.005})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    yield from fake_gemini_env(monkeypatch)


# --- content errors: counted, journaled, never the breaker's business ---------------------------
def test_unusable_answers_never_open_the_breaker(tmp_path: Path, fake: FakeGemini) -> None:
    fake.default = WRONG_SIDE  # a model that ignores the schema: every answer is unusable
    limits = {"concurrency": 1, "breaker": {"failures": 2, "cooldown_s": 600}}
    oracle = make_oracle(tmp_path, fake, gemini={"limits": limits})
    outcomes = [oracle.decide_many([r])[0] for r in requests_n(6)]
    assert fake.count == 6  # every question was asked: no circuit opened
    assert {o.error_kind for o in outcomes} == {ErrorKind.INVALID_DECISION}
    assert oracle.stats.errors == {"invalid_decision": 6}
    events = oracle.drain_events()
    assert not any("circuit" in e for e in events)
    assert not any("failed" in e for e in events)  # about questions, not a provider outage
    oracle.close()

    restarted = make_oracle(tmp_path, fake, gemini={"limits": limits})  # seeded from the journal
    fake.default = Ok()
    [outcome] = restarted.decide_many([make_request(rsi=90.0)])
    assert outcome.source is DecisionSource.BACKEND and fake.count == 7
    restarted.close()


def test_service_failures_still_open_the_breaker_between_unusable_answers(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.then(ServerError(500), WRONG_SIDE, ServerError(500), ServerError(500))
    limits = {"concurrency": 1, "breaker": {"failures": 2, "cooldown_s": 600}}
    oracle = make_oracle(tmp_path, fake, gemini={"limits": limits})
    kinds = [oracle.decide_many([r])[0].error_kind for r in requests_n(5)]
    # The unusable answer proves the provider answers: the streak starts again after it.
    assert kinds == [
        ErrorKind.SERVER_ERROR,
        ErrorKind.INVALID_DECISION,
        ErrorKind.SERVER_ERROR,
        ErrorKind.SERVER_ERROR,
        ErrorKind.CIRCUIT_OPEN,
    ]
    assert fake.count == 4
    oracle.close()


def test_a_question_with_k_unusable_answers_is_not_asked_again(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.default = WRONG_SIDE
    request = make_request()
    oracle = make_oracle(tmp_path, fake, gemini={"max_invalid_answers": 2})
    first, second, third = (oracle.decide_many([request])[0] for _ in range(3))
    assert [first.error_kind, second.error_kind] == [ErrorKind.INVALID_DECISION] * 2
    assert third.error_kind is ErrorKind.UNANSWERABLE and third.decision.action is Action.HOLD
    assert fake.count == 2  # the third ask cost nothing
    assert oracle.stats.unanswerable == 1 and oracle.stats.misses == 2
    oracle.close()

    # Replay reports it as unanswerable, not as a miss.
    block = gemini_config(fake, gemini={"max_invalid_answers": 2})
    block.update(backend="replay", replay={"source": "gemini", "on_miss": "hold"})
    replayer = Oracle(load_config(block), Journal(tmp_path / "j.sqlite"))
    [outcome] = replayer.decide_many([request])
    assert outcome.error_kind is ErrorKind.UNANSWERABLE
    assert replayer.stats.misses == 0 and replayer.stats.unanswerable == 1
    assert " 0 misses, 1 unanswerable," in replayer.stats.summary()
    replayer.close()

    # A setting in the key changes: it is a new question, asked again.
    fake.default = Ok()
    changed = make_oracle(
        tmp_path, fake, gemini={"max_invalid_answers": 2, "thinking_level": "medium"}
    )
    [fresh] = changed.decide_many([request])
    assert fresh.source is DecisionSource.BACKEND and fake.count == 3
    changed.close()


def test_service_failures_do_not_make_a_question_unanswerable(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.then(ServerError(500), ServerError(500), ServerError(500))
    request = make_request()
    oracle = make_oracle(tmp_path, fake, gemini={"max_invalid_answers": 2})
    kinds = [oracle.decide_many([request])[0].error_kind for _ in range(3)]
    assert kinds == [ErrorKind.SERVER_ERROR] * 3 and fake.count == 3
    [answered] = oracle.decide_many([request])
    assert answered.source is DecisionSource.BACKEND
    oracle.close()


# --- one owner for the deadline -----------------------------------------------------------------
def test_503_then_hang_is_two_attempts_and_the_server_error(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.then(ServerError(503), Hang())
    retry = {"max_retries": 3, "initial_backoff_s": 0.05, "max_backoff_s": 0.05}
    limits = {"concurrency": 1, "breaker": {"failures": 1, "cooldown_s": 600}}
    oracle = make_oracle(tmp_path, fake, timeout_s=1.0, gemini={"retry": retry, "limits": limits})
    started = time.monotonic()
    [outcome] = oracle.decide_many([make_request()])
    assert time.monotonic() - started < 1.0 + 0.5
    assert fake.count == 2
    assert outcome.error_kind is ErrorKind.SERVER_ERROR
    oracle.flush()
    [row] = all_rows(oracle.journal)
    assert row["attempts"] == 2 and row["error_kind"] == "server_error"
    assert "503" in row["error_detail"] and "cut by the deadline" in row["error_detail"]
    assert oracle.stats.requests_sent == 2
    assert oracle.guard is not None and oracle.guard.budget.spent.calls == 2  # budget exact
    events = oracle.drain_events()
    assert any("circuit open" in e and "server_error" in e for e in events)
    fake.release()
    oracle.close()


# --- retries as Google's SDK does them ----------------------------------------------------------
def test_408_is_retried_and_501_is_not(tmp_path: Path, fake: FakeGemini) -> None:
    assert {408, 429, 500, 502, 503, 504} == RETRIED_CODES
    fake.then(ServerError(408), Ok())
    oracle = make_oracle(tmp_path, fake, gemini={"retry": {"max_retries": 2}})
    [outcome] = oracle.decide_many([make_request()])
    assert outcome.source is DecisionSource.BACKEND and fake.count == 2
    fake.then(ServerError(501), Ok())
    [refused] = oracle.decide_many([make_request(rsi=70.0)])
    assert refused.error_kind is ErrorKind.SERVER_ERROR and fake.count == 3
    oracle.close()


# --- model lifecycle ----------------------------------------------------------------------------
def test_an_answer_from_another_model_is_never_stored_as_the_configured_ones(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.model_version = MODEL_VERSION  # Google reroutes the configured id to another model
    oracle = make_oracle(tmp_path, fake)
    outcomes = [oracle.decide_many([r])[0] for r in requests_n(3)]
    assert {o.error_kind for o in outcomes} == {ErrorKind.MODEL_MISMATCH}
    assert {o.decision.action for o in outcomes} == {Action.HOLD}
    assert oracle.stats.model_mismatches == 3 and oracle.stats.errors == {"model_mismatch": 3}
    events = oracle.drain_events()
    assert len(events) == 1  # announced once per model that answers instead
    assert MODEL_VERSION in events[0] and "gemini-3.8-flash" in events[0]
    assert "set gemini.model" in events[0]
    oracle.flush()
    rows = all_rows(oracle.journal)
    assert {r["error_kind"] for r in rows} == {"model_mismatch"}
    assert {r["model_version"] for r in rows} == {MODEL_VERSION}
    assert all(r["raw_response"] for r in rows)  # paid for: kept for the audit
    assert oracle.journal.lookup([o.key for o in outcomes]) == {}  # never served as answers
    oracle.close()

    fake.model_version = "gemini-3.8-flash-001"  # a revision of the configured model is it
    again = make_oracle(tmp_path, fake)
    [outcome] = again.decide_many([make_request()])
    assert outcome.source is DecisionSource.BACKEND
    again.close()


@pytest.mark.parametrize(
    ("served", "same"),
    [
        (None, True),
        ("gemini-3.8-flash", True),
        ("models/gemini-3.8-flash", True),
        ("gemini-3.8-flash-001", True),
        ("gemini-3.8-flash-09-2026", True),
        ("gemini-3.8-flash-lite", False),
        ("gemini-3.9-flash", False),
        ("gemini-3.8-flash-preview", False),
    ],
)
def test_same_model(served: str | None, same: bool) -> None:
    assert same_model("gemini-3.8-flash", served) is same


# --- shutdown -----------------------------------------------------------------------------------
def test_close_is_idempotent_and_releases_thread_client_and_journal(
    tmp_path: Path, fake: FakeGemini
) -> None:
    oracle = make_oracle(tmp_path, fake)
    oracle.decide_many([make_request()])
    thread = oracle._loop._thread
    assert thread is not None and thread.is_alive()
    oracle.close()
    oracle.close()  # Freqtrade may call ft_bot_cleanup more than once (reload, shutdown)
    assert not thread.is_alive()
    assert getattr(oracle.backend, "_client", "none") is None  # the HTTP session is closed
    assert oracle.journal._conn is None and oracle.journal._write_conn is None
    assert oracle.stats.recorded == 1 and "1 recorded" in oracle.stats.summary()
