"""From the runner's backtests and ledger to the report: every number, the warnings, the verdict."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from llm_oracle.config import OracleConfig
from llm_oracle.report.cost import Bill, bill
from llm_oracle.report.spec import Candidate, RunnerOutput
from llm_oracle.report.stats import (
    Calibration,
    GroupRow,
    Metrics,
    PlaceboBand,
    VetoValue,
    band,
    breakdown,
    calibration,
    equity_curve,
    metrics,
    placebo_values,
    placebo_vetoes,
    veto_value,
    week_of,
)
from llm_oracle.report.variants import confirms

_MODEL = ConfigDict(extra="forbid")
NOT_AN_LLM = {"rules"}  # local policies remember nothing


class VariantSummary(BaseModel):
    model_config = _MODEL
    name: str
    kind: str
    seed: int | None
    metrics: Metrics
    counters: dict[str, float]


class CostSection(BaseModel):
    model_config = _MODEL
    bill: Bill
    oracle_profit_net: float  # the oracle's backtest profit minus the API bill
    value_added_net: float  # oracle minus pre-filter alone, minus the API bill
    usd_per_decision: float | None
    usd_per_trade: float | None
    # What each decision must add to pay for itself, in R per 100 candidates and in USDT.
    break_even_r_per_100: float
    break_even_usdt_per_decision: float | None


class Memorisation(BaseModel):
    model_config = _MODEL
    model: str
    language_model: bool
    cutoff: date | None
    source: str | None
    before: VetoValue | None
    after: VetoValue | None
    warning: str | None


class WeekRow(BaseModel):
    model_config = _MODEL
    week: str
    profit: dict[str, float]  # variant -> profit of trades closed that week
    placebo_profit_p50: float | None
    veto: VetoValue
    placebo_p95: float
    above_placebo: bool


class Report(BaseModel):
    model_config = _MODEL
    name: str
    created: datetime
    start: datetime
    end: datetime
    timeframe: str
    pairs: list[str]
    source_backend: str
    source_model: str
    stake_currency: str
    wallet: float
    risk_unit: float  # 1 R in the stake currency
    risk_per_trade: float
    min_confidence: float
    settings: dict[str, float | int | str]
    variants: list[VariantSummary]
    placebo_profit: PlaceboBand  # backtests: the oracle's profit against the placebo seeds
    veto: VetoValue
    placebo_veto: PlaceboBand  # ledger: the oracle's veto value against placebo vetoes
    placebo_veto_values: list[float]  # every placebo seed's veto value (the band's histogram)
    calibration: Calibration
    by_side: list[GroupRow]
    by_pair: list[GroupRow]
    by_week: list[GroupRow]
    weeks: list[WeekRow]
    without_best_week: float | None
    cost: CostSection
    memorisation: Memorisation
    identity_matches_oracle: bool | None
    misses: dict[str, int]
    ledger_exits: dict[str, int]
    warnings: list[str]
    verdict: str
    equity: dict[str, tuple[list[str], list[float]]]
    seconds: dict[str, float]


def _memorisation(
    config: OracleConfig, out: RunnerOutput, usable: list[Candidate], r, vetoed, usdt_per_r, n
) -> Memorisation:
    model = out.source_model
    if out.source_backend in NOT_AN_LLM:
        return Memorisation(
            model=model,
            language_model=False,
            cutoff=None,
            source=None,
            before=None,
            after=None,
            warning=None,
        )
    entry = config.report.knowledge_cutoffs.get(model)
    if entry is None:
        return Memorisation(
            model=model,
            language_model=True,
            cutoff=None,
            source=None,
            before=None,
            after=None,
            warning=(
                f"no knowledge cutoff configured for model {model}: results may be flattered by "
                "what it remembers; add llm_oracle.report.knowledge_cutoffs"
            ),
        )
    dates = np.array([c.date.astimezone(UTC).date() for c in usable])
    before = dates <= entry.cutoff
    warning = None
    if out.start.astimezone(UTC).date() <= entry.cutoff:
        share = float(before.mean() * 100) if len(before) else 100.0
        warning = (
            f"{share:.0f}% of the candidates lie on or before {model}'s knowledge cutoff "
            f"{entry.cutoff} ({entry.source}): the model may remember what happened next, so "
            "those results can be flattered; trust the 'after cutoff' split"
        )

    def split(mask: np.ndarray) -> VetoValue | None:
        return veto_value(r[mask], vetoed[mask], usdt_per_r, n) if mask.any() else None

    return Memorisation(
        model=model,
        language_model=True,
        cutoff=entry.cutoff,
        source=entry.source,
        before=split(before),
        after=split(~before),
        warning=warning,
    )


def build_report(name: str, out: RunnerOutput, config: OracleConfig, journal_path: Path) -> Report:
    settings = config.report
    wallet = out.wallet
    usdt_per_r = out.risk_per_trade * out.risk_equity
    usable = [c for c in out.candidates if c.ledger is not None]
    r = np.array([c.ledger.r for c in usable], dtype=float)  # type: ignore[union-attr]
    vetoed = np.array(
        [not confirms(c.decision, c.side, out.min_confidence) for c in usable], dtype=float
    )
    sides = [c.side for c in usable]
    n_boot = settings.bootstrap_samples
    veto = veto_value(r, vetoed, usdt_per_r, n_boot)
    shuffled = placebo_vetoes(vetoed, sides, settings.ledger_placebo_seeds)
    placebo_all = [round(float(x), 4) for x in placebo_values(r, shuffled, None)]
    placebo_veto = band(placebo_all, veto.r_per_100.value)

    summaries = [
        VariantSummary(
            name=v.name,
            kind=v.kind,
            seed=v.seed,
            metrics=metrics(v.trades, wallet),
            counters=v.oracle,
        )
        for v in out.variants
    ]
    by_name = {s.name: s for s in summaries}
    oracle = by_name["oracle"].metrics
    prefilter = by_name["prefilter"].metrics
    placebo_profits = [s.metrics.profit for s in summaries if s.kind == "placebo"]
    placebo_profit = band(placebo_profits, oracle.profit)

    def by(label):  # type: ignore[no-untyped-def]
        return breakdown(usable, r, vetoed, label, usdt_per_r, n_boot, shuffled)

    by_week = by(lambda c: week_of(c.date))
    weeks = []
    for row in by_week:
        profit = {}
        placebo_week = []
        for v in out.variants:
            value = sum(t.profit_abs for t in v.trades if week_of(t.close_date) == row.group)
            if v.kind == "placebo":
                placebo_week.append(value)
            else:
                profit[v.name] = value
        weeks.append(
            WeekRow(
                week=row.group,
                profit=profit,
                placebo_profit_p50=float(np.median(placebo_week)) if placebo_week else None,
                veto=row.veto,
                placebo_p95=row.placebo_p95,
                above_placebo=row.veto.r_per_100.value > row.placebo_p95,
            )
        )
    without_best = None
    if len(by_week) > 1:
        best = max(by_week, key=lambda w: w.veto.r_per_100.value).group
        keep = np.array([week_of(c.date) != best for c in usable])
        without_best = veto_value(r[keep], vetoed[keep], usdt_per_r, 100).r_per_100.value

    keys = {c.key for c in out.candidates} | set(out.asked_keys)
    paid = bill(journal_path, out.source_backend, out.source_model, keys)
    decisions = max(paid.decisions, 0)
    cost = CostSection(
        bill=paid,
        oracle_profit_net=oracle.profit - paid.usd,
        value_added_net=oracle.profit - prefilter.profit - paid.usd,
        usd_per_decision=paid.usd / decisions if decisions else None,
        usd_per_trade=paid.usd / oracle.trades if oracle.trades else None,
        break_even_r_per_100=(paid.usd / usdt_per_r / len(usable) * 100) if len(usable) else 0.0,
        break_even_usdt_per_decision=paid.usd / decisions if decisions else None,
    )
    memo = _memorisation(config, out, usable, r, vetoed, usdt_per_r, n_boot)

    oracle_counters = by_name["oracle"].counters
    misses = {
        "entries": int(oracle_counters.get("misses", 0) - oracle_counters.get("review_misses", 0)),
        "exit_reviews": int(oracle_counters.get("review_misses", 0)),
        "unanswered_candidates": sum(1 for c in out.candidates if c.decision is None),
        "unanswerable": int(oracle_counters.get("unanswerable", 0)),
        "recorded_now": out.recorded,
    }
    warnings = []
    if memo.warning:
        warnings.append(memo.warning)
    if out.identity_matches_oracle is False:
        warnings.append(
            "the recorded decisions served as a variant table did not reproduce the oracle's "
            "replay trade for trade: compare the variants with care"
        )
    if misses["unanswered_candidates"]:
        warnings.append(
            f"{misses['unanswered_candidates']} candidates have no recorded decision (misses, "
            "answered hold): record the range first for a complete picture"
        )
    if len(by_week) < 2:
        warnings.append("the range spans one week: stability cannot be judged")
    verdict = _verdict(veto, placebo_veto, cost, out.stake_currency, weeks, without_best)
    exits: dict[str, int] = {}
    for c in usable:
        exits[c.ledger.exit] = exits.get(c.ledger.exit, 0) + 1  # type: ignore[union-attr]
    return Report(
        name=name,
        created=datetime.now(UTC),
        start=out.start,
        end=out.end,
        timeframe=out.timeframe,
        pairs=out.pairs,
        source_backend=out.source_backend,
        source_model=out.source_model,
        stake_currency=out.stake_currency,
        wallet=wallet,
        risk_unit=usdt_per_r,
        risk_per_trade=out.risk_per_trade,
        min_confidence=out.min_confidence,
        settings={
            "placebo_backtests": len(placebo_profits),
            "ledger_placebo_seeds": settings.ledger_placebo_seeds,
            "bootstrap_samples": n_boot,
            "horizon_candles": settings.horizon_candles,
            "fee": out.fee,
        },
        variants=summaries,
        placebo_profit=placebo_profit,
        veto=veto,
        placebo_veto=placebo_veto,
        placebo_veto_values=placebo_all,
        calibration=calibration(usable, out.min_confidence),
        by_side=by(lambda c: c.side.value),
        by_pair=by(lambda c: c.pair),
        by_week=by_week,
        weeks=weeks,
        without_best_week=without_best,
        cost=cost,
        memorisation=memo,
        identity_matches_oracle=out.identity_matches_oracle,
        misses=misses,
        ledger_exits=exits,
        warnings=warnings,
        verdict=verdict,
        equity={v.name: equity_curve(v.trades, wallet) for v in out.variants},
        seconds=out.seconds,
    )


def _verdict(
    veto: VetoValue,
    placebo: PlaceboBand,
    cost: CostSection,
    currency: str,
    weeks: list[WeekRow],
    without_best: float | None,
) -> str:
    v = veto.r_per_100
    above = v.value > placebo.p95
    text = (
        f"{veto.vetoed} of {veto.candidates} candidates vetoed; "
        f"vetoes add {v.value:+.2f} R per 100 candidates (95% CI {v.low:+.2f}..{v.high:+.2f}), "
        f"above the placebo's 95th percentile ({placebo.p95:+.2f}): {'yes' if above else 'no'}; "
        f"net of API cost: {cost.value_added_net:+.2f} {currency} "
        f"(oracle vs pre-filter alone, after ${cost.bill.usd:.4f} of API calls)"
    )
    if weeks:
        good = sum(w.above_placebo for w in weeks)
        text += f"; weeks above their placebo p95: {good} of {len(weeks)}"
    if without_best is not None:
        text += f"; without the best week: {without_best:+.2f} R per 100"
    return text
