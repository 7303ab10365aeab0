"""The numbers of the report: backtest metrics, the value of vetoes with bootstrap confidence
intervals against a placebo distribution, calibration, and their breakdowns by side, pair, week.

Every random draw comes from a seeded numpy generator: the same inputs give the same report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from pydantic import BaseModel, ConfigDict

from llm_oracle.models import Side
from llm_oracle.report.spec import Candidate, TradeRow
from llm_oracle.report.variants import confirms, placebo_order

_MODEL = ConfigDict(extra="forbid")
BOOTSTRAP_SEED = 20250601  # fixed: a report is reproducible


class Metrics(BaseModel):
    model_config = _MODEL
    trades: int
    profit: float
    profit_pct: float
    win_rate: float
    max_drawdown_pct: float
    profit_factor: float | None


def metrics(trades: Sequence[TradeRow], wallet: float) -> Metrics:
    ordered = sorted(trades, key=lambda t: t.close_date)
    profits = np.array([t.profit_abs for t in ordered], dtype=float)
    equity = wallet + np.concatenate([[0.0], np.cumsum(profits)])
    peaks = np.maximum.accumulate(equity)
    drawdown = float(((peaks - equity) / peaks).max()) if len(equity) else 0.0
    gains, losses = profits[profits > 0].sum(), -profits[profits < 0].sum()
    return Metrics(
        trades=len(ordered),
        profit=float(profits.sum()),
        profit_pct=float(profits.sum() / wallet * 100),
        win_rate=float((profits > 0).mean()) if len(profits) else 0.0,
        max_drawdown_pct=drawdown * 100,
        profit_factor=float(gains / losses) if losses > 0 else None,
    )


def equity_curve(trades: Sequence[TradeRow], wallet: float) -> tuple[list[str], list[float]]:
    ordered = sorted(trades, key=lambda t: t.close_date)
    times = [t.close_date.isoformat() for t in ordered]
    return times, (wallet + np.cumsum([t.profit_abs for t in ordered])).tolist()


class Interval(BaseModel):
    model_config = _MODEL
    value: float
    low: float
    high: float


class VetoValue(BaseModel):
    """What the vetoes did to the candidates they refused, per 100 candidates (positive: good)."""

    model_config = _MODEL
    candidates: int
    vetoed: int
    vetoed_losers_share: float | None  # of the vetoed candidates, the share that would have lost
    r_per_100: Interval
    usdt: Interval  # the same in USDT at risk_per_trade x wallet per candidate trade


def _values(r: np.ndarray, vetoed: np.ndarray) -> float:
    # + 0.0: no "-0.00" when nothing was vetoed.
    return float(-(r * vetoed).sum() / len(r) * 100) + 0.0 if len(r) else 0.0


def veto_value(
    r: np.ndarray, vetoed: np.ndarray, usdt_per_r: float, samples: int, seed: int = BOOTSTRAP_SEED
) -> VetoValue:
    n = len(r)
    value = _values(r, vetoed)
    low = high = value
    if n > 1:
        rng = np.random.default_rng(seed)
        draws = np.empty(samples)
        for start in range(0, samples, 250):  # bounded memory on long ranges
            idx = rng.integers(0, n, size=(min(250, samples - start), n))
            draws[start : start + len(idx)] = -(r[idx] * vetoed[idx]).sum(axis=1) / n * 100
        low, high = (float(x) + 0.0 for x in np.percentile(draws, [2.5, 97.5]))
    lost = r[vetoed.astype(bool)] <= 0
    scale = usdt_per_r * n / 100  # R per 100 candidates -> USDT over the range
    return VetoValue(
        candidates=n,
        vetoed=int(vetoed.sum()),
        vetoed_losers_share=float(lost.mean()) if len(lost) else None,
        r_per_100=Interval(value=value, low=low, high=high),
        usdt=Interval(value=value * scale, low=low * scale, high=high * scale),
    )


class PlaceboBand(BaseModel):
    model_config = _MODEL
    seeds: int
    p5: float
    p50: float
    p95: float
    oracle_percentile: float  # share of placebo seeds the oracle beats (0..100)


def band(values: Sequence[float], oracle: float) -> PlaceboBand:
    arr = np.asarray(values, dtype=float)
    if not len(arr):
        return PlaceboBand(seeds=0, p5=oracle, p50=oracle, p95=oracle, oracle_percentile=50.0)
    p5, p50, p95 = (float(x) + 0.0 for x in np.percentile(arr, [5, 50, 95]))
    beaten = float(((arr < oracle).sum() + 0.5 * (arr == oracle).sum()) / len(arr) * 100)
    return PlaceboBand(seeds=len(arr), p5=p5, p50=p50, p95=p95, oracle_percentile=beaten)


def placebo_vetoes(vetoed: np.ndarray, sides: Sequence[Side], seeds: int) -> np.ndarray:
    """The vetoes of placebo seeds 0..seeds-1, one row per seed (the backtests' seeds are the
    first rows): the oracle's decisions shuffled among candidates of the same side."""
    out = np.zeros((seeds, len(vetoed)), dtype=np.float32)
    for seed in range(seeds):
        out[seed] = vetoed[placebo_order(sides, seed)]
    return out


def placebo_values(r: np.ndarray, shuffled: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Veto value of every placebo row, optionally over a subset (a week, a pair)."""
    keep = np.ones(len(r), dtype=bool) if mask is None else mask
    n = int(keep.sum())
    if not n or not len(shuffled):
        return np.zeros(len(shuffled))
    return -(shuffled[:, keep] @ r[keep]) / n * 100 + 0.0


class CalibrationBin(BaseModel):
    model_config = _MODEL
    low: float
    high: float
    n: int
    mean_confidence: float | None
    win_rate: float | None


class Calibration(BaseModel):
    model_config = _MODEL
    bins: list[CalibrationBin]
    brier: float | None  # of the confirmed candidates' confidence as a win probability
    holds: int
    holds_win_rate: float | None  # how often a vetoed candidate would have won


EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def calibration(candidates: Sequence[Candidate], min_confidence: float) -> Calibration:
    """Stated confidence of confirmations against the ledger's realised win rate."""
    conf, win, hold_wins = [], [], []
    for c in candidates:
        if c.ledger is None or c.decision is None:
            continue
        if confirms(c.decision, c.side, min_confidence):
            conf.append(c.decision.confidence)
            win.append(c.ledger.r > 0)
        else:
            hold_wins.append(c.ledger.r > 0)
    conf_a, win_a = np.asarray(conf, dtype=float), np.asarray(win, dtype=float)
    bins = []
    for i, (lo, hi) in enumerate(zip(EDGES, EDGES[1:], strict=False)):
        last = i == len(EDGES) - 2
        sel = (conf_a >= lo) & ((conf_a <= hi) if last else (conf_a < hi))
        n = int(sel.sum())
        bins.append(
            CalibrationBin(
                low=lo,
                high=hi,
                n=n,
                mean_confidence=float(conf_a[sel].mean()) if n else None,
                win_rate=float(win_a[sel].mean()) if n else None,
            )
        )
    return Calibration(
        bins=bins,
        brier=float(((conf_a - win_a) ** 2).mean()) if len(conf_a) else None,
        holds=len(hold_wins),
        holds_win_rate=float(np.mean(hold_wins)) if hold_wins else None,
    )


class GroupRow(BaseModel):
    model_config = _MODEL
    group: str
    veto: VetoValue
    placebo_p95: float
    # Calibration within the group: the confirmations' stated confidence and realised win rate.
    mean_confidence: float | None
    confirmed_win_rate: float | None


def week_of(moment: datetime) -> str:
    """The Monday (UTC) that starts the candidate's week: the walk-forward window's name."""
    day = moment.astimezone(UTC).date()
    return (day - timedelta(days=day.weekday())).isoformat()


def breakdown(
    candidates: Sequence[Candidate],
    r: np.ndarray,
    vetoed: np.ndarray,
    label: Callable[[Candidate], str],
    usdt_per_r: float,
    samples: int,
    shuffled: np.ndarray,
) -> list[GroupRow]:
    labels = np.array([label(c) for c in candidates])
    rows = []
    for group in sorted(set(labels.tolist())):
        mask = labels == group
        placebo = placebo_values(r, shuffled, mask)
        taken = mask & (vetoed == 0)
        confidence = [c.decision.confidence for c, t in zip(candidates, taken, strict=True) if t]
        rows.append(
            GroupRow(
                group=group,
                veto=veto_value(r[mask], vetoed[mask], usdt_per_r, samples),
                placebo_p95=float(np.percentile(placebo, 95)) if len(placebo) else 0.0,
                mean_confidence=float(np.mean(confidence)) if confidence else None,
                confirmed_win_rate=float((r[taken] > 0).mean()) if taken.any() else None,
            )
        )
    return rows
