"""The report's parts without Freqtrade: placebo permutations, variant tables and backend, the
ledger's trade arithmetic, the statistics, the API bill and the memorisation audit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from llm_oracle import risk
from llm_oracle.backends import build_backend
from llm_oracle.backends.rules import RulesBackend
from llm_oracle.backends.variants import DecisionTable, SourceIdentity, VariantBackend
from llm_oracle.config import FallbackPolicy, OracleConfigError, load_config
from llm_oracle.journal import Journal
from llm_oracle.models import Action, JournalEntry, OracleDecision, Purpose, Side
from llm_oracle.report import variants
from llm_oracle.report.build import build_report
from llm_oracle.report.ledger import value_candidate
from llm_oracle.report.spec import Candidate, LedgerOutcome, RunnerOutput, TradeRow, VariantRun
from llm_oracle.report.stats import band, calibration, veto_value
from tests.factories import make_request

RULES = risk.MoneyRules()
FEE = 0.0005


def _confirm(side: Side, confidence: float = 0.8) -> OracleDecision:
    return OracleDecision(action=Action(side.value), confidence=confidence, stop_loss=0.01)


def _candidates(n: int, start: datetime | None = None) -> list[Candidate]:
    start = start or datetime(2025, 6, 2, tzinfo=UTC)
    out = []
    for i in range(n):
        side = Side.LONG if i % 3 else Side.SHORT
        out.append(
            Candidate(
                pair="BTC/USDT:USDT" if i % 2 else "ETH/USDT:USDT",
                date=start + timedelta(hours=6 * i),
                side=side,
                key=f"{i:064x}",
                decision=_confirm(side) if i % 4 else OracleDecision.hold("no"),
                ledger=LedgerOutcome(
                    r=1.0 if i % 5 else -1.0, net_return=0.0, exit="stop", candles=3
                ),
            )
        )
    return out


SOURCE = SourceIdentity(name="rules", model="rules-v1", prompt_version="none")


def test_placebo_is_a_permutation_within_each_side_and_deterministic_per_seed() -> None:
    sides = [Side.LONG if i % 3 else Side.SHORT for i in range(60)]
    order = variants.placebo_order(sides, 3)
    assert sorted(order.tolist()) == list(range(60))
    assert all(sides[j] is sides[i] for i, j in enumerate(order))
    assert np.array_equal(order, variants.placebo_order(sides, 3))
    assert not np.array_equal(order, variants.placebo_order(sides, 4))


def test_variant_tables_keep_or_flip_the_confirmations() -> None:
    cands = _candidates(40)
    confirmed = [variants.confirms(c.decision, c.side, 0.6) for c in cands]
    pre = variants.prefilter(SOURCE, cands, {}, 0.6)
    inv = variants.inverted(SOURCE, cands, {}, 0.6)
    for c, was in zip(cands, confirmed, strict=True):
        assert variants.confirms(pre.entries[c.key], c.side, 0.6)
        assert variants.confirms(inv.entries[c.key], c.side, 0.6) is not was
        if not was:  # a neutral entry: the money rules' stop binds, the lowest acting confidence
            assert inv.entries[c.key].stop_loss == variants.NEUTRAL_STOP  # type: ignore[union-attr]
            assert inv.entries[c.key].confidence == 0.6  # type: ignore[union-attr]
    placebo = variants.placebo(SOURCE, cands, {}, 1)
    for side in Side:
        mine = [c for c in cands if c.side is side]
        before = sum(variants.confirms(c.decision, side, 0.6) for c in mine)
        after = sum(variants.confirms(placebo.entries[c.key], side, 0.6) for c in mine)
        assert before == after


def test_variant_backend_serves_the_table_and_never_another_sources() -> None:
    rules = RulesBackend()
    request = make_request()
    key = rules.identity.key(request)
    table = DecisionTable(
        name="t", source=SourceIdentity.of(rules.identity), entries={key: _confirm(Side.LONG)}
    )
    backend = VariantBackend(rules, table, FallbackPolicy.HOLD, rules)
    result = asyncio.run(backend.decide(request))
    assert result.decision == _confirm(Side.LONG) and result.record is False
    assert backend.identity.key(request) != key  # never mistaken for a recorded answer
    other = DecisionTable(name="t", source=SOURCE.model_copy(update={"model": "x"}), entries={})
    with pytest.raises(OracleConfigError, match="not of the replay source"):
        VariantBackend(rules, other, FallbackPolicy.HOLD, rules)
    with pytest.raises(OracleConfigError, match="needs a table"):
        build_backend(load_config({"backend": "variant"}))
    with pytest.raises(OracleConfigError, match="replay.source"):
        load_config({"replay": {"source": "variant"}})


def test_variant_backend_from_config(tmp_path: Path) -> None:
    rules = RulesBackend()
    request = make_request()
    table = DecisionTable(name="t", source=SourceIdentity.of(rules.identity), entries={})
    path = table.write(tmp_path / "t.json")
    backend = build_backend(load_config({"backend": "variant", "variant": {"table": str(path)}}))
    decision = asyncio.run(backend.decide(request)).decision
    assert decision is not None and decision.action is Action.HOLD  # not in the table: hold
    assert backend.entry_misses == 1  # type: ignore[attr-defined]


def _path(prices: list[tuple[float, float, float, float]]) -> tuple[np.ndarray, ...]:
    arr = np.array(prices, dtype=float)
    return arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]


def _value(side: Side, prices: list[tuple[float, float, float, float]], horizon: int = 50):
    o, h, low, c = _path(prices)
    return value_candidate(
        side, 0, o, h, low, c, 0.2, rules=RULES, fee=FEE, hard_stoploss=-0.05, horizon=horizon
    )


def test_ledger_target_stop_gap_and_horizon() -> None:
    # ATR 0.2 on 100: the stop sits 2 x ATR = 0.4% away; the target at 3x fees (~0.4%).
    won = _value(Side.LONG, [(100, 100, 100, 100), (100, 100.1, 99.9, 100), (100, 101, 99.9, 101)])
    assert won is not None and won.exit == "target" and won.r > 0 and won.candles == 2
    lost = _value(Side.LONG, [(100, 100, 100, 100), (100, 100.1, 99.0, 99.5)])
    assert lost is not None and lost.exit == "stop"
    assert lost.r == pytest.approx(-1.0, abs=0.02)  # one risk unit, fees included
    gap = _value(
        Side.SHORT, [(100, 100, 100, 100), (100, 100.1, 99.9, 100), (101, 101.5, 100.9, 101.2)]
    )
    assert gap is not None and gap.exit == "stop" and gap.r < -1.5  # filled at the gap's open
    both = _value(Side.LONG, [(100, 100, 100, 100), (100, 101, 99, 100)])
    assert both is not None and both.exit == "stop"  # pessimistic: the stop first
    flat = _value(Side.LONG, [(100, 100, 100, 100)] + [(100, 100.1, 99.9, 100)] * 10, horizon=5)
    assert flat is not None and flat.exit == "horizon" and flat.candles == 5
    assert _value(Side.LONG, [(100, 100, 100, 100)]) is None  # nothing after the signal


def test_veto_value_ci_and_placebo_band() -> None:
    r = np.array([1.0, -1.0, -1.0, 2.0, -1.0, 0.5] * 20)
    vetoed = np.array([0, 1, 1, 0, 1, 0] * 20, dtype=float)
    value = veto_value(r, vetoed, usdt_per_r=200.0, samples=500)
    assert value.r_per_100.value == pytest.approx(50.0)  # 3 losers of 1 R avoided per 6
    assert value.r_per_100.low < 50.0 < value.r_per_100.high
    assert value.vetoed_losers_share == 1.0
    assert value.usdt.value == pytest.approx(50.0 * 200.0 * 120 / 100)
    assert veto_value(r, vetoed, 200.0, 500) == value  # seeded: reproducible
    placebo = band([0.0, 1.0, 2.0, 3.0], 2.5)
    assert placebo.oracle_percentile == 75.0 and placebo.p95 < 3.0


def test_calibration_bins_confirmations_by_confidence() -> None:
    cands = _candidates(40)
    cal = calibration(cands, 0.6)
    bin_ = next(b for b in cal.bins if b.low == 0.8)
    confirmed = [c for c in cands if variants.confirms(c.decision, c.side, 0.6)]
    assert bin_.n == len(confirmed)
    assert bin_.win_rate == pytest.approx(np.mean([c.ledger.r > 0 for c in confirmed]))  # type: ignore[union-attr]
    assert cal.holds == len(cands) - len(confirmed)


def _output(cands: list[Candidate], backend: str, model: str) -> RunnerOutput:
    trade = TradeRow(
        pair="BTC/USDT:USDT",
        open_date=cands[0].date,
        close_date=cands[0].date + timedelta(hours=1),
        is_short=False,
        profit_abs=10.0,
        profit_ratio=0.01,
        exit_reason="roi",
        enter_tag="oracle_long",
        leverage=1.0,
    )
    runs = [
        VariantRun(name=n, kind=k, trades=[trade], final_balance=1010.0, seconds=1.0)
        for n, k in (("oracle", "oracle"), ("prefilter", "prefilter"), ("inverted", "inverted"))
    ]
    return RunnerOutput(
        start=cands[0].date,
        end=cands[-1].date,
        timeframe="3m",
        stake_currency="USDT",
        wallet=1000.0,
        risk_equity=1000.0,
        recorded=0,
        fee=FEE,
        min_confidence=0.6,
        risk_per_trade=0.02,
        source_backend=backend,
        source_model=model,
        pairs=["BTC/USDT:USDT", "ETH/USDT:USDT"],
        candidates=cands,
        asked_keys=[],
        variants=runs,
        identity_matches_oracle=None,
        seconds={},
    )


def test_gemini_report_charges_the_bill_and_audits_the_cutoff(tmp_path: Path) -> None:
    # The range straddles the shipped cutoff (2025-01-31): a warning, and a split at it.
    cands = _candidates(40, start=datetime(2025, 1, 25, tzinfo=UTC))
    journal = tmp_path / "journal.sqlite"
    with Journal(journal) as j:
        j.record_many(
            JournalEntry(
                key=c.key,
                purpose=Purpose.ENTRY,
                backend="gemini",
                model="gemini-3.8-flash",
                prompt_version="v1",
                request_json="{}",
                decision=c.decision,
                cost_usd=0.002,
            )
            for c in cands[:30]
        )
    report = build_report(
        "t", _output(cands, "gemini", "gemini-3.8-flash"), load_config({}), journal
    )
    assert report.cost.bill.usd == pytest.approx(0.06) and report.cost.bill.decisions == 30
    assert report.cost.value_added_net == pytest.approx(-0.06)  # same trades, minus the bill
    assert report.cost.usd_per_decision == pytest.approx(0.002)
    memo = report.memorisation
    assert memo.cutoff is not None and memo.cutoff.isoformat() == "2025-01-31"
    assert memo.before is not None and memo.after is not None
    assert memo.before.candidates + memo.after.candidates == 40
    assert memo.warning is not None and any("knowledge cutoff" in w for w in report.warnings)
    assert "vetoes add" in report.verdict and "net of API cost: -0.06 USDT" in report.verdict
    after = build_report(
        "t",
        _output(
            _candidates(40, start=datetime(2025, 6, 2, tzinfo=UTC)), "gemini", "gemini-3.8-flash"
        ),
        load_config({}),
        journal,
    )
    assert after.memorisation.warning is None and after.memorisation.before is None
    unknown = build_report(
        "t", _output(cands, "gemini", "gemini-9-ultra"), load_config({}), journal
    )
    assert unknown.memorisation.warning and "no knowledge cutoff" in unknown.memorisation.warning
