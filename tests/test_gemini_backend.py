"""The Gemini backend through the real google-genai client against the fake endpoint on loopback.

Every scripted failure must end as a journal row with its error kind (and the raw text where the
provider sent one), and the strategy must get the fallback, never an entry the LLM did not
validly confirm.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_oracle.backends import RulesBackend
from llm_oracle.backends.gemini import GeminiBackend, cost_usd, response_schema, retry_delay_s
from llm_oracle.config import ModelPrice, load_config
from llm_oracle.journal import Journal
from llm_oracle.limits import CircuitBreaker
from llm_oracle.models import (
    Action,
    DecisionSource,
    ErrorKind,
    OracleDecision,
    Position,
    Purpose,
    Side,
    Usage,
)
from llm_oracle.oracle import Oracle
from llm_oracle.progress import Progress
from llm_oracle.prompt import SYSTEM_INSTRUCTIONS, render
from llm_oracle.sanity import stop_range, target_floor
from llm_oracle.schema import answer_schema
from tests.factories import make_request
from tests.fake_gemini import (
    Blocked,
    Custom,
    EchoKey,
    FakeGemini,
    Hang,
    Malformed,
    Ok,
    RateLimited,
    ServerError,
    Slow,
    Truncated,
    schema_instance,
)
from tests.gemini_helpers import (
    KEY,
    all_rows,
    fake_gemini_env,
    gemini_config,
    make_oracle,
    requests_n,
)

# The SDK subclasses aiohttp.ClientSession, which aiohttp deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    yield from fake_gemini_env(monkeypatch)


# --- the happy path and the wire format --------------------------------------------------------
def test_valid_answer_is_recorded_with_usage_cost_and_model_version(
    tmp_path: Path, fake: FakeGemini
) -> None:
    oracle = make_oracle(tmp_path, fake)
    long_req, short_req = make_request(), make_request(candidate=Side.SHORT, ema200_pct=-0.5)
    outcomes = oracle.decide_many([long_req, short_req])
    assert [o.source for o in outcomes] == [DecisionSource.BACKEND] * 2
    assert [o.decision.action for o in outcomes] == [Action.LONG, Action.SHORT]
    assert outcomes[0].decision.stop_loss == 0.005

    rows = all_rows(oracle.journal)
    assert len(rows) == 2 and all(r["error_kind"] is None for r in rows)
    row = rows[0]
    assert json.loads(row["raw_response"])["action"] in ("long", "short")
    assert (row["prompt_tokens"], row["output_tokens"], row["thinking_tokens"]) == (400, 50, 30)
    assert row["cached_tokens"] == 100 and row["attempts"] == 1
    expected = (300 * 1.50 + 100 * 0.15 + (50 + 30) * 7.50) / 1e6  # gemini-3.8-flash
    assert row["cost_usd"] == pytest.approx(expected)
    assert row["model_version"] == "gemini-3.8-flash"
    assert row["backend"] == "gemini" and row["model"] == "gemini-3.8-flash"
    assert json.loads(row["settings"])["schema"] == "2"
    assert row["latency_ms"] > 0

    sent = {r.user_text: r for r in fake.requests}
    request = sent[render(long_req).user]
    assert request.path == "/v1beta/models/gemini-3.8-flash:generateContent"
    assert request.headers["x-goog-api-key"] == "<redacted>"
    assert request.body["systemInstruction"]["parts"][0]["text"] == SYSTEM_INSTRUCTIONS
    gen = request.body["generationConfig"]
    assert gen["responseMimeType"] == "application/json"
    assert gen["temperature"] == 1.0 and gen["seed"] == 42 and gen["maxOutputTokens"] == 2048
    assert json.dumps(gen["thinkingConfig"]).lower().count("low") == 1
    schema = gen["responseSchema"]
    assert set(schema["properties"]) == set(OracleDecision.model_fields)
    assert schema["properties"]["action"]["enum"] == ["long", "hold"]  # this question only
    assert "stop_loss" in schema["required"]
    assert "additional_properties" not in json.dumps(schema)  # the Gemini API rejects it
    assert "additionalProperties" not in json.dumps(schema)
    short_schema = sent[render(short_req).user].body["generationConfig"]["responseSchema"]
    assert short_schema["properties"]["action"]["enum"] == ["short", "hold"]
    assert oracle.stats.tokens == 2 * 480 and oracle.stats.cost_usd == pytest.approx(2 * expected)
    oracle.close()


def test_exit_review_is_answered(tmp_path: Path, fake: FakeGemini) -> None:
    oracle = make_oracle(tmp_path, fake)
    position = Position(side=Side.LONG, profit_pct=0.4, candles_held=5, leverage=2)
    review = make_request(purpose=Purpose.EXIT_REVIEW, candidate=None, position=position)
    [outcome] = oracle.decide_many([review])
    assert outcome.source is DecisionSource.BACKEND and outcome.decision.action is Action.HOLD
    oracle.close()


def test_wire_schema_is_built_per_question_from_the_sanity_bounds() -> None:
    config = load_config({}).gemini
    entry = make_request()  # ATR 0.25%: stops within [0.00125, 0.025]
    props = response_schema(entry, config).properties or {}
    assert props["action"].enum == ["long", "hold"]
    low, high = stop_range(entry, config.stop_bounds)
    assert (props["stop_loss"].minimum, props["stop_loss"].maximum) == (low, high)
    assert (low, high) == (0.00125, 0.025)
    assert props["take_profit"].minimum == target_floor(entry) == 0.001101  # > 2 x 0.00055
    assert props["take_profit"].nullable is True
    assert (props["confidence"].minimum, props["confidence"].maximum) == (0.0, 1.0)
    assert props["reasoning"].max_length == 2000

    position = Position(side=Side.SHORT, profit_pct=0.1, candles_held=12, leverage=1)
    review = make_request(purpose=Purpose.EXIT_REVIEW, candidate=None, position=position)
    review_schema = response_schema(review, config)
    assert (review_schema.properties or {})["action"].enum == ["exit", "hold"]
    assert set(review_schema.properties or {}) == {"action", "confidence", "reasoning"}
    short = make_request(candidate=Side.SHORT)
    assert (response_schema(short, config).properties or {})["action"].enum == ["short", "hold"]


def test_every_answer_the_schema_allows_passes_the_checks() -> None:
    """Bounds included: the schema and the sanity checks describe the same answers."""
    config = load_config({}).gemini
    backend = GeminiBackend(config, 5)
    position = Position(side=Side.LONG, profit_pct=-0.3, candles_held=15, leverage=2)
    questions = [
        make_request(rsi=40.0 + i, candidate=side)
        for i in range(10)
        for side in (Side.LONG, Side.SHORT)
    ] + [make_request(purpose=Purpose.EXIT_REVIEW, candidate=None, position=position)]
    rng = random.Random(7)
    rejected = []
    for request in questions:
        schema = answer_schema(request, config.stop_bounds)
        wire = response_schema(request, config).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        for _ in range(200):
            answer = schema_instance(wire, rng)
            result = backend.interpret(
                _response(json.dumps(answer)), request, attempts=1, latency_ms=1.0
            )
            if result.error_kind is not None:
                rejected.append((answer, result.error_detail))
        assert schema["property_ordering"] == list(schema["properties"])
    assert rejected == []


def _response(text: str, model: str = "gemini-3.8-flash") -> Any:
    from google.genai import types

    return types.GenerateContentResponse.model_validate(
        {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": text}]}, "finish_reason": "STOP"}
            ],
            "model_version": model,
        }
    )


# --- every failure: journal row, fallback, never an unconfirmed entry ---------------------------
FAILURES = [
    (Malformed(), ErrorKind.INVALID_JSON, True),
    (Truncated(), ErrorKind.TRUNCATED, True),
    (Blocked(), ErrorKind.BLOCKED, True),
    (ServerError(500), ErrorKind.SERVER_ERROR, False),
    (ServerError(503), ErrorKind.SERVER_ERROR, False),
    (RateLimited("0.1s"), ErrorKind.RATE_LIMITED, False),
    # Schema-valid JSON, unusable decisions:
    (Custom({"action": "short", "confidence": 0.9, "stop_loss": 0.005}), "opposite side", True),
    (Custom({"action": "exit", "confidence": 0.9}), "exit on entry", True),
    (Custom({"action": "long", "confidence": 0.9, "stop_loss": -0.01}), "stop wrong side", True),
    (Custom({"action": "long", "confidence": 0.9, "stop_loss": 0.2}), "stop 80 ATR", True),
    (Custom({"action": "long", "confidence": 0.9, "stop_loss": 0.0006}), "stop in noise", True),
    (Custom({"action": "long", "confidence": 1.5, "stop_loss": 0.005}), "confidence", True),
    (Custom({"action": "long", "confidence": 0.9}), "no stop", True),
    (
        Custom({"action": "long", "confidence": 0.9, "stop_loss": 0.005, "take_profit": 0.001}),
        "target below fees",
        True,
    ),
]


@pytest.mark.parametrize("fallback", ["hold", "rules"])
@pytest.mark.parametrize(("behaviour", "kind", "has_raw"), FAILURES)
def test_failure_is_journaled_and_answered_by_the_fallback(
    tmp_path: Path,
    fake: FakeGemini,
    behaviour: Any,
    kind: ErrorKind | str,
    has_raw: bool,
    fallback: str,
) -> None:
    expected_kind = kind if isinstance(kind, ErrorKind) else ErrorKind.INVALID_DECISION
    fake.default = behaviour
    oracle = make_oracle(tmp_path, fake, fallback=fallback)
    request = make_request()
    [outcome] = oracle.decide_many([request])
    assert fake.count == 1
    assert outcome.source is DecisionSource.FALLBACK
    assert outcome.error_kind is expected_kind
    if fallback == "hold":
        assert outcome.decision.action is Action.HOLD
    else:
        assert outcome.decision == RulesBackend().decide_now(request)
    [row] = all_rows(oracle.journal)
    assert row["error_kind"] == expected_kind.value and row["decision_json"] is None
    assert row["error_detail"]
    assert (row["raw_response"] is not None) is has_raw
    if has_raw:
        assert row["cost_usd"] > 0 and row["prompt_tokens"] == 400
    if isinstance(behaviour, Blocked):
        assert "SAFETY" in row["raw_response"]
    assert oracle.journal.lookup([outcome.key]) == {}  # failures are never served as answers
    oracle.close()


def test_hang_past_timeout_returns_within_the_deadline(tmp_path: Path, fake: FakeGemini) -> None:
    fake.default = Hang()
    oracle = make_oracle(tmp_path, fake, timeout_s=0.5)
    started = time.monotonic()
    outcomes = oracle.decide_many(requests_n(3))
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 0.5 + 0.5
    assert {o.error_kind for o in outcomes} == {ErrorKind.TIMEOUT}
    assert {o.decision.action for o in outcomes} == {Action.HOLD}
    assert [r["error_kind"] for r in all_rows(oracle.journal)] == ["timeout"] * 3
    fake.release()
    oracle.close()


def test_slow_answer_within_the_deadline_is_used(tmp_path: Path, fake: FakeGemini) -> None:
    fake.default = Slow(0.3)
    oracle = make_oracle(tmp_path, fake, timeout_s=3)
    [outcome] = oracle.decide_many([make_request()])
    assert outcome.source is DecisionSource.BACKEND
    assert all_rows(oracle.journal)[0]["latency_ms"] >= 300
    oracle.close()


# --- retries -----------------------------------------------------------------------------------
def test_retry_honours_retry_delay(tmp_path: Path, fake: FakeGemini) -> None:
    fake.then(RateLimited("0.3s"))
    oracle = make_oracle(tmp_path, fake, gemini={"retry": {"max_retries": 2}})
    [outcome] = oracle.decide_many([make_request()])
    assert outcome.source is DecisionSource.BACKEND
    assert fake.count == 2
    first, second = fake.requests
    assert second.at - first.at >= 0.3
    assert first.body == second.body
    [row] = all_rows(oracle.journal)
    assert row["attempts"] == 2 and row["error_kind"] is None
    oracle.close()


def test_retry_delay_beyond_the_deadline_is_not_slept(tmp_path: Path, fake: FakeGemini) -> None:
    fake.then(RateLimited("5s"))
    oracle = make_oracle(tmp_path, fake, timeout_s=1, gemini={"retry": {"max_retries": 3}})
    started = time.monotonic()
    [outcome] = oracle.decide_many([make_request()])
    assert time.monotonic() - started < 0.5  # gave up at once instead of sleeping into a timeout
    assert outcome.error_kind is ErrorKind.RATE_LIMITED and fake.count == 1
    assert "would pass the deadline" in all_rows(oracle.journal)[0]["error_detail"]
    oracle.close()


def test_server_errors_are_retried_with_backoff_but_never_past_timeout(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.default = ServerError(503)
    retry = {"max_retries": 10, "initial_backoff_s": 0.1, "max_backoff_s": 0.4, "jitter": 0.2}
    oracle = make_oracle(tmp_path, fake, timeout_s=2.0, gemini={"retry": retry})
    started = time.monotonic()
    [outcome] = oracle.decide_many([make_request()])
    assert time.monotonic() - started <= 2.0 + 0.3
    assert outcome.error_kind is ErrorKind.SERVER_ERROR
    # How many fit depends on the machine's speed (the first request builds the client); each
    # wait must follow the exponential schedule (jitter +-20%).
    assert 2 <= fake.count <= 8
    gaps = [b.at - a.at for a, b in zip(fake.requests, fake.requests[1:], strict=False)]
    assert all(gap >= 0.8 * min(0.4, 0.1 * 2**i) for i, gap in enumerate(gaps)), gaps
    row = all_rows(oracle.journal)[0]
    # Attempts are requests started. The last one may be cut by the deadline before its bytes
    # reach the server (the more so on a loaded machine); then the journal says so.
    if "the retry was cut by the deadline" in row["error_detail"]:
        assert fake.count <= row["attempts"] <= fake.count + 1
    else:
        assert row["attempts"] == fake.count
    oracle.close()


def test_transport_errors_are_retried_then_reported(
    tmp_path: Path, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = gemini_config(fake, gemini={"base_url": dead, "retry": {"max_retries": 2}})
    oracle = Oracle(load_config(config), Journal(tmp_path / "j.sqlite"))
    [outcome] = oracle.decide_many([make_request()])
    assert outcome.error_kind is ErrorKind.TRANSPORT
    assert all_rows(oracle.journal)[0]["attempts"] == 3
    oracle.close()


# --- spending gate: budget and circuit breaker, across restarts ---------------------------------
@pytest.mark.parametrize(
    ("budget", "calls_allowed"),
    [
        ({"daily_calls": 2}, 2),
        ({"daily_tokens": 900}, 2),  # 480 per call: the third sees 960 >= 900
        ({"daily_usd": 0.002}, 2),  # 0.001065 per call
    ],
)
def test_budget_exhaustion_falls_back_without_calling_and_survives_restart(
    tmp_path: Path, fake: FakeGemini, budget: dict[str, Any], calls_allowed: int
) -> None:
    limits = {"concurrency": 1, "budget": {"daily_calls": None, **budget}}
    oracle = make_oracle(tmp_path, fake, gemini={"limits": limits})
    events: list[str] = []
    oracle.on_event = events.append
    outcomes = [oracle.decide_many([r])[0] for r in requests_n(4)]
    assert fake.count == calls_allowed
    assert [o.source for o in outcomes[:calls_allowed]] == [DecisionSource.BACKEND] * 2
    assert {o.error_kind for o in outcomes[calls_allowed:]} == {ErrorKind.BUDGET_EXHAUSTED}
    assert {o.decision.action for o in outcomes[calls_allowed:]} == {Action.HOLD}
    assert len(events) == 1 and "daily budget exhausted" in events[0]  # announced once
    assert oracle.drain_events() == events and oracle.drain_events() == []
    kinds = [r["error_kind"] for r in all_rows(oracle.journal)]
    assert kinds == [None, None, "budget_exhausted", "budget_exhausted"]
    oracle.close()

    restarted = make_oracle(tmp_path, fake, gemini={"limits": limits})
    [outcome] = restarted.decide_many([make_request(rsi=77.0)])
    assert outcome.error_kind is ErrorKind.BUDGET_EXHAUSTED and fake.count == calls_allowed
    assert any("budget" in e for e in restarted.drain_events())
    restarted.close()


def test_circuit_opens_after_k_failures_and_stays_open_after_restart(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.default = ServerError(500)
    limits = {"concurrency": 1, "breaker": {"failures": 3, "cooldown_s": 600}}
    oracle = make_oracle(tmp_path, fake, gemini={"limits": limits})
    outcomes = [oracle.decide_many([r])[0] for r in requests_n(5)]
    assert fake.count == 3
    assert [o.error_kind for o in outcomes] == [ErrorKind.SERVER_ERROR] * 3 + [
        ErrorKind.CIRCUIT_OPEN
    ] * 2
    events = oracle.drain_events()
    assert sum("circuit open" in e for e in events) == 1
    assert sum("failed (server_error" in e for e in events) == 1  # the streak, once
    oracle.close()

    restarted = make_oracle(tmp_path, fake, gemini={"limits": limits})
    assert any("circuit still open" in e for e in restarted.drain_events())
    [outcome] = restarted.decide_many([make_request(rsi=80.0)])
    assert outcome.error_kind is ErrorKind.CIRCUIT_OPEN and fake.count == 3
    restarted.close()


def test_circuit_half_opens_after_cooldown_and_closes_on_success(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.then(ServerError(500), ServerError(500))
    limits = {"concurrency": 1, "breaker": {"failures": 2, "cooldown_s": 30}}
    oracle = make_oracle(tmp_path, fake, gemini={"limits": limits})
    assert oracle.guard is not None
    clock = [0.0]
    oracle.guard.breaker = CircuitBreaker(2, 30, clock=lambda: clock[0])
    first = [oracle.decide_many([r])[0] for r in requests_n(3)]
    assert first[2].error_kind is ErrorKind.CIRCUIT_OPEN and fake.count == 2
    clock[0] += 30  # the cooldown passes on the breaker's clock
    [trial] = oracle.decide_many([make_request(rsi=90.0)])
    assert trial.source is DecisionSource.BACKEND and fake.count == 3
    events = oracle.drain_events()
    assert any("circuit closed" in e for e in events)
    assert any("answers again" in e for e in events)
    oracle.close()


# --- rate and concurrency ----------------------------------------------------------------------
def test_rate_limiter_keeps_to_rpm(tmp_path: Path, fake: FakeGemini) -> None:
    limits = {"concurrency": 8, "rpm": 600, "rpm_burst": 1}  # one request per 0.1 s
    oracle = make_oracle(tmp_path, fake, recording=True, gemini={"limits": limits})
    outcomes = oracle.decide_many(requests_n(8))
    assert {o.source for o in outcomes} == {DecisionSource.BACKEND}
    stamps = sorted(r.at for r in fake.requests)
    span = stamps[-1] - stamps[0]
    assert span >= 7 * 0.1 * 0.95  # 8 requests at 10/s: at least 7 intervals
    assert span < 7 * 0.1 + 1.0
    oracle.close()


def test_live_batch_answers_within_timeout_even_when_queued_for_rate(
    tmp_path: Path, fake: FakeGemini
) -> None:
    limits = {"concurrency": 8, "rpm": 60, "rpm_burst": 2}  # 2 now, then one per second
    oracle = make_oracle(tmp_path, fake, timeout_s=0.5, gemini={"limits": limits})
    started = time.monotonic()
    outcomes = oracle.decide_many(requests_n(5))
    assert time.monotonic() - started < 0.5 + 0.3
    assert fake.count == 2
    assert sum(o.source is DecisionSource.BACKEND for o in outcomes) == 2
    queued = [o for o in outcomes if o.source is DecisionSource.FALLBACK]
    assert {o.error_kind for o in queued} == {ErrorKind.RATE_LIMITED}
    rows = all_rows(oracle.journal)
    assert sorted(r["attempts"] for r in rows) == [0, 0, 0, 1, 1]
    oracle.close()


def test_concurrency_bound_is_respected(tmp_path: Path, fake: FakeGemini) -> None:
    fake.default = Slow(0.15)
    oracle = make_oracle(tmp_path, fake, gemini={"limits": {"concurrency": 2}}, recording=True)
    outcomes = oracle.decide_many(requests_n(6))
    assert {o.source for o in outcomes} == {DecisionSource.BACKEND}
    assert fake.max_in_flight == 2
    oracle.close()


def test_each_answer_is_journaled_as_it_arrives(tmp_path: Path, fake: FakeGemini) -> None:
    fake.then(Ok(), Ok(), Hang())
    oracle = make_oracle(tmp_path, fake, recording=True, timeout_s=30)
    batch = threading.Thread(target=oracle.decide_many, args=(requests_n(3),))
    batch.start()
    assert fake.wait_for(requests=3, responded=2, timeout=10)
    # The batch is still waiting for the third answer; the first two must already be on disk.
    with Journal(tmp_path / "j.sqlite") as other:
        deadline = time.monotonic() + 5
        while other.count() < 2 and time.monotonic() < deadline:
            fake.wait_for(responded=3, timeout=0.05)  # bounded wait, not a blind sleep
        assert other.count() == 2
    assert batch.is_alive()
    fake.release()
    batch.join(timeout=10)
    assert oracle.journal.count() == 3
    oracle.close()


def test_progress_callback_reports_calls_tokens_and_usd(tmp_path: Path, fake: FakeGemini) -> None:
    seen: list[Progress] = []
    config = load_config(gemini_config(fake, recording=True))
    oracle = Oracle(config, Journal(tmp_path / "j.sqlite"), on_progress=seen.append)
    oracle.decide_many(requests_n(4))
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == 4
    assert seen[-1].calls == 4 and seen[-1].tokens == 4 * 480 and seen[-1].cost_usd > 0
    oracle.close()


# --- the API key -------------------------------------------------------------------------------
def test_api_key_never_reaches_logs_journal_or_details(
    tmp_path: Path, fake: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.then(RateLimited("0.05s"), Ok(), ServerError(500), Malformed(), EchoKey(), Hang())
    retry = {"max_retries": 1, "initial_backoff_s": 0.05}
    oracle = make_oracle(tmp_path, fake, timeout_s=1, gemini={"retry": retry})
    oracle.on_event = lambda message: logging.getLogger("test").info(message)
    for request in requests_n(5):
        oracle.decide_many([request])
    fake.release()
    rows = all_rows(oracle.journal)
    kinds = {r["error_kind"] for r in rows}
    assert {None, "invalid_json", "client_error"} <= kinds
    echoed = [r for r in rows if r["error_kind"] == "client_error"]
    assert "[redacted]" in echoed[0]["error_detail"]  # the server echoed it; we scrubbed it
    for row in rows:
        for column, value in row.items():
            assert KEY not in str(value), column
    assert KEY not in caplog.text
    assert all(KEY not in json.dumps(r.body) for r in fake.requests)
    oracle.close()


def test_missing_key_is_a_clear_error_without_calling(
    tmp_path: Path,
    fake: FakeGemini,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    oracle = make_oracle(tmp_path, fake)
    outcomes = [oracle.decide_many([r])[0] for r in requests_n(3)]
    assert fake.count == 0
    assert {o.error_kind for o in outcomes} == {ErrorKind.AUTH}
    assert {o.decision.action for o in outcomes} == {Action.HOLD}
    assert caplog.text.count("no API key") == 1 + 1  # the backend's line + the oracle's event
    row = all_rows(oracle.journal)[0]
    assert row["attempts"] == 0 and "GEMINI_API_KEY" in row["error_detail"]
    oracle.close()


def test_wrong_key_is_an_auth_error(
    tmp_path: Path, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "not-the-key")
    oracle = make_oracle(tmp_path, fake)
    [outcome] = oracle.decide_many([make_request()])
    assert outcome.error_kind is ErrorKind.AUTH and fake.count == 1
    oracle.close()


def test_replay_that_holds_on_a_miss_needs_no_key(
    tmp_path: Path, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    config = load_config({"backend": "replay", "replay": {"source": "gemini", "on_miss": "hold"}})
    oracle = Oracle(config, Journal(tmp_path / "j.sqlite"))
    [outcome] = oracle.decide_many([make_request()])
    assert outcome.source is DecisionSource.FALLBACK and outcome.error_kind is None
    assert oracle.guard is None and oracle.journal.count(errors=True) == 0
    oracle.close()


def test_replay_records_gemini_then_replays_with_zero_calls(
    tmp_path: Path, fake: FakeGemini
) -> None:
    block = gemini_config(fake)
    block.update(backend="replay", replay={"source": "gemini", "on_miss": "call:gemini"})
    recorder = Oracle(load_config(block), Journal(tmp_path / "j.sqlite"))
    recorded = recorder.decide_many(requests_n(3))
    recorder.close()
    block["replay"]["on_miss"] = "hold"
    replayer = Oracle(load_config(block), Journal(tmp_path / "j.sqlite"))
    replayed = replayer.decide_many(requests_n(3))
    assert fake.count == 3 and replayer.stats.journal_hits == 3
    assert [o.decision for o in replayed] == [o.decision for o in recorded]
    replayer.close()


# --- small pure pieces -------------------------------------------------------------------------
def test_cost_prices_cached_and_thinking_tokens() -> None:
    price = ModelPrice(input=1.0, output=10.0, cached_input=0.1)
    usage = Usage(prompt_tokens=1000, cached_tokens=400, output_tokens=100, thinking_tokens=50)
    assert cost_usd(usage, price) == pytest.approx((600 * 1 + 400 * 0.1 + 150 * 10) / 1e6)
    no_cache_price = ModelPrice(input=1.0, output=10.0)
    assert cost_usd(usage, no_cache_price) == pytest.approx((1000 + 1500) / 1e6)


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ({"error": {"details": [{"@type": "x/google.rpc.RetryInfo", "retryDelay": "7s"}]}}, 7.0),
        ({"error": {"details": [{"@type": "google.rpc.RetryInfo", "retryDelay": "0.25s"}]}}, 0.25),
        (
            {
                "error": {
                    "details": [{"@type": "google.rpc.RetryInfo", "retryDelay": {"seconds": 2}}]
                }
            },
            2,
        ),
        ({"error": {"details": [{"@type": "google.rpc.QuotaFailure"}]}}, None),
        ({"error": {"message": "no details"}}, None),
        ("not a dict", None),
    ],
)
def test_retry_delay_parsing(details: Any, expected: float | None) -> None:
    assert retry_delay_s(details) == expected
