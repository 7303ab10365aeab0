"""Oracle behaviour: cache, replay miss policies, rules determinism, timeouts and fallback."""

import asyncio
from pathlib import Path

import pytest

from llm_oracle.backends import Backend, BackendIdentity, BackendResult, RulesBackend, build_backend
from llm_oracle.config import load_config
from llm_oracle.journal import Journal
from llm_oracle.models import (
    Action,
    DecisionSource,
    ErrorKind,
    OracleDecision,
    OracleRequest,
    Position,
    Purpose,
    Side,
)
from llm_oracle.oracle import Oracle
from tests.factories import make_request


class ScriptedBackend(Backend):
    """A backend whose behaviour a test sets; counts what reaches it."""

    def __init__(self, behaviour: str = "ok") -> None:
        self.identity = BackendIdentity("scripted", "s-1", "v1")
        self.behaviour = behaviour
        self.calls = 0
        self.release = asyncio.Event()

    async def decide(self, request: OracleRequest, deadline: float | None = None) -> BackendResult:
        self.calls += 1
        if self.behaviour == "hang":
            await self.release.wait()
        if self.behaviour == "raise":
            raise RuntimeError("backend bug")
        if self.behaviour == "wrong_action":
            return BackendResult(decision=OracleDecision(action=Action.EXIT, confidence=0.9))
        side = Action(request.candidate.value)  # type: ignore[union-attr]
        return BackendResult(
            decision=OracleDecision(action=side, confidence=0.8, stop_loss=0.01),
            raw_response='{"ok":true}',
        )


def oracle_with(tmp_path: Path, impl: Backend | None = None, **cfg: object) -> Oracle:
    config = load_config(cfg)
    return Oracle(config, Journal(tmp_path / "j.sqlite"), impl)


def test_second_ask_is_a_journal_hit_with_no_backend_call(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    oracle = oracle_with(tmp_path, backend, backend="rules")
    requests = [make_request(rsi=50 + i) for i in range(5)]
    first = oracle.decide_many(requests)
    assert backend.calls == 5
    assert {o.source for o in first} == {DecisionSource.BACKEND}
    second = oracle.decide_many(requests)
    assert backend.calls == 5
    assert [o.decision for o in second] == [o.decision for o in first]
    assert {o.source for o in second} == {DecisionSource.JOURNAL}
    assert oracle.stats.journal_hits == 5 and oracle.stats.recorded == 5
    oracle.close()


def test_duplicate_requests_in_one_batch_are_asked_once(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    oracle = oracle_with(tmp_path, backend)
    outcomes = oracle.decide_many([make_request()] * 3)
    assert backend.calls == 1 and len(outcomes) == 3
    oracle.close()


def test_rules_backend_is_deterministic_and_always_stops() -> None:
    rules = RulesBackend()
    for rsi in (20.0, 50.0, 80.0):
        for side in (Side.LONG, Side.SHORT):
            request = make_request(
                candidate=side, rsi=rsi, ema200_pct=0.5 if side is Side.LONG else -0.5
            )
            first, second = rules.decide_now(request), rules.decide_now(request)
            assert first == second
            assert first.action in (Action(side.value), Action.HOLD)
            if first.action is not Action.HOLD:
                assert first.stop_loss is not None and 0.003 <= first.stop_loss <= 0.03
                assert first.take_profit is not None and first.take_profit >= first.stop_loss


def test_rules_vetoes_a_candidate_against_the_regime() -> None:
    decision = RulesBackend().decide_now(make_request(candidate=Side.LONG, ema200_pct=-1.0))
    assert decision.action is Action.HOLD


def test_rules_exit_review() -> None:
    losing = Position(side=Side.LONG, profit_pct=-0.5, candles_held=10, leverage=1)
    request = make_request(
        purpose=Purpose.EXIT_REVIEW, candidate=None, position=losing, macd_hist_pct=-0.02
    )
    assert RulesBackend().decide_now(request).action in (Action.EXIT, Action.HOLD)
    assert RulesBackend().decide_now(request).fits(request) is None


@pytest.mark.parametrize("on_miss", ["hold", "rules"])
def test_replay_miss_without_call_is_answered_but_not_recorded(
    tmp_path: Path, on_miss: str
) -> None:
    oracle = oracle_with(tmp_path, None, backend="replay", replay={"on_miss": on_miss})
    [outcome] = oracle.decide_many([make_request()])
    assert outcome.source is DecisionSource.FALLBACK
    expected = (
        Action.HOLD if on_miss == "hold" else RulesBackend().decide_now(make_request()).action
    )
    assert outcome.decision.action is expected
    assert oracle.journal.count() == 0
    assert oracle.stats.backend_calls == 0 and oracle.stats.misses == 1
    oracle.close()


def test_replay_reports_entry_and_review_misses_apart(tmp_path: Path) -> None:
    """Reviews replay differently from entries (another candle, a live profit), so a summary
    that merged them would hide the reason a review-heavy backtest holds."""
    held = Position(side=Side.SHORT, profit_pct=0.3, candles_held=4, leverage=2)
    entries = [make_request(rsi=40 + i) for i in range(3)]
    reviews = [
        make_request(purpose=Purpose.EXIT_REVIEW, candidate=None, position=held, rsi=50 + i)
        for i in range(2)
    ]
    recorder = oracle_with(tmp_path, None, backend="replay", replay={"on_miss": "call:rules"})
    recorder.decide_many(entries[:1] + reviews[:1])  # one of each is in the journal
    recorder.close()

    replayer = oracle_with(tmp_path, None, backend="replay", replay={"on_miss": "hold"})
    outcomes = replayer.decide_many(entries + reviews)
    assert [o.source for o in outcomes].count(DecisionSource.FALLBACK) == 3
    assert replayer.stats.misses == 3 and replayer.stats.review_misses == 1
    assert "misses by purpose: entries 2, exit reviews 1" in replayer.stats.summary()
    replayer.close()


def test_replay_call_records_then_replays_with_zero_calls(tmp_path: Path) -> None:
    requests = [make_request(rsi=40 + i) for i in range(4)]
    recorder = oracle_with(tmp_path, None, backend="replay", replay={"on_miss": "call:rules"})
    recorded = recorder.decide_many(requests)
    assert recorder.stats.backend_calls == 4 and recorder.journal.count() == 4
    recorder.close()

    replayer = oracle_with(tmp_path, None, backend="replay", replay={"on_miss": "hold"})
    replayed = replayer.decide_many(requests)
    assert replayer.stats.backend_calls == 0 and replayer.stats.journal_hits == 4
    assert [o.decision for o in replayed] == [o.decision for o in recorded]
    replayer.close()


def test_replay_reads_what_the_source_backend_recorded(tmp_path: Path) -> None:
    direct = oracle_with(tmp_path, None, backend="rules")
    direct.decide_many([make_request()])
    direct.close()
    replay = oracle_with(tmp_path, None, backend="replay")
    assert replay.key_for(make_request()) == direct.key_for(make_request())
    assert replay.decide_many([make_request()])[0].source is DecisionSource.JOURNAL
    replay.close()


def test_build_backend_by_name() -> None:
    assert build_backend(load_config({"backend": "rules"})).identity.name == "rules"
    replay = build_backend(load_config({"backend": "replay"}))
    assert replay.identity == RulesBackend().identity


def test_hanging_backend_times_out_into_the_fallback(tmp_path: Path) -> None:
    backend = ScriptedBackend("hang")
    oracle = oracle_with(tmp_path, backend, timeout_s=0.2, fallback="hold")
    [outcome] = oracle.decide_many([make_request()])
    assert outcome.source is DecisionSource.FALLBACK
    assert outcome.error_kind is ErrorKind.TIMEOUT
    assert outcome.decision.action is Action.HOLD
    oracle.flush()
    rows = oracle.journal.query("SELECT error_kind, decision_json FROM decisions")
    assert rows == [("timeout", None)]
    assert oracle.stats.errors == {"timeout": 1}
    oracle.close()


def test_raising_backend_is_journaled_and_answered_by_rules_fallback(tmp_path: Path) -> None:
    oracle = oracle_with(tmp_path, ScriptedBackend("raise"), fallback="rules")
    [outcome] = oracle.decide_many([make_request()])
    assert outcome.error_kind is ErrorKind.BACKEND_ERROR
    assert outcome.decision == RulesBackend().decide_now(make_request())
    assert oracle.journal.count(errors=True) == 1 and oracle.journal.count() == 0
    # A failure is not cached: the next ask tries the backend again.
    oracle.decide_many([make_request()])
    assert oracle.stats.backend_calls == 2
    oracle.close()


def test_answer_that_does_not_fit_the_purpose_is_rejected(tmp_path: Path) -> None:
    oracle = oracle_with(tmp_path, ScriptedBackend("wrong_action"))
    [outcome] = oracle.decide_many([make_request()])
    assert outcome.error_kind is ErrorKind.INVALID_DECISION
    assert outcome.decision.action is Action.HOLD
    assert oracle.journal.query("SELECT error_kind FROM decisions") == [("invalid_decision",)]
    oracle.close()


# --- keys that mean what they say --------------------------------------------------------------
def _key(block: dict) -> str:
    return build_backend(load_config(block)).identity.key(make_request())


@pytest.mark.parametrize(
    "change",
    [
        {"rules": {"min_stop": 0.004}},
        {"rules": {"max_stop": 0.02}},
        {"rules": {"atr_stop_multiplier": 3.0}},
        {"rules": {"reward_risk": 2.0}},
    ],
)
def test_every_rules_parameter_is_in_the_key(change: dict) -> None:
    assert _key({"backend": "rules"}) != _key({"backend": "rules", **change})
    # Replay looks keys up as its source computes them, with the source's settings.
    assert _key({"backend": "replay", **change}) == _key({"backend": "rules", **change})


GEMINI = {"backend": "gemini"}


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gemini-3.5-flash"},
        {"temperature": 0.5},
        {"temperature": None},
        {"seed": 7},
        {"seed": None},
        {"max_output_tokens": 4096},
        {"thinking_level": "high"},
        {"thinking_level": None, "thinking_budget": 512},
        {"stop_bounds": {"atr_min": 1.0}},
    ],
)
def test_every_answer_changing_gemini_setting_is_in_the_key(change: dict) -> None:
    assert _key(GEMINI) != _key({**GEMINI, "gemini": change})
    replay = {"backend": "replay", "replay": {"source": "gemini"}, "gemini": change}
    assert _key(replay) == _key({**GEMINI, "gemini": change})


@pytest.mark.parametrize(
    "change",
    [
        {"retry": {"max_retries": 5}},
        {"limits": {"rpm": 10}},
        {"base_url": "https://proxy.example.com"},
        {"max_invalid_answers": 5},
        {"max_answer_bytes": 4096},
        {"prices": {"gemini-3.8-flash": {"input": 9.0, "output": 9.0}}},
    ],
)
def test_settings_that_cannot_change_an_answer_keep_the_key(change: dict) -> None:
    assert _key(GEMINI) == _key({**GEMINI, "gemini": change})


def test_changing_rules_min_stop_changes_the_replayed_stops_on_the_next_run(
    tmp_path: Path,
) -> None:
    """The shipped flow (replay, on_miss call:rules) over the same candidates, three runs."""
    requests = [make_request(rsi=45 + i) for i in range(6)]  # ATR 0.25%: 2 x ATR = 0.005

    def run(min_stop: float) -> tuple[list[float | None], Oracle]:
        block = {"backend": "replay", "replay": {"on_miss": "call:rules"}}
        oracle = oracle_with(tmp_path, None, **block, rules={"min_stop": min_stop})
        stops = [o.decision.stop_loss for o in oracle.decide_many(requests)]
        oracle.close()
        return stops, oracle

    first, recorder = run(0.003)
    again, replayer = run(0.003)
    assert again == first and replayer.stats.journal_hits == 6
    assert {s for s in first if s is not None} == {0.005}
    raised, changed = run(0.01)
    assert changed.stats.journal_hits == 0 and changed.stats.recorded == 6  # asked anew
    assert {s for s in raised if s is not None} == {0.01}
    replayed, last = run(0.01)
    assert replayed == raised and last.stats.journal_hits == 6
