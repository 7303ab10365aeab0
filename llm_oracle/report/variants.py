"""Decision tables of the variants, built from the source's recorded decisions only.

No function here takes the ledger: what a variant decides can never depend on the future.
- identity: the recorded decisions as they are (its backtest must equal the oracle's replay,
  which checks the variant plumbing itself);
- prefilter: every candidate traded; the oracle's confirmations keep their stop and confidence,
  a veto becomes a neutral entry;
- inverted: every confirmation vetoed, every veto a neutral entry;
- placebo (seed): the oracle's decisions shuffled among the candidates of the same side, so the
  number of confirmations per side and their stops and confidences stay, only *which*
  candidates get them is random. Deterministic per seed.
A neutral entry has the lowest confidence the strategy acts on and a stop at the widest bound,
so the money rules' ATR or hard stop binds: the pre-filter's trade, without the oracle's input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llm_oracle.backends.variants import DecisionTable, SourceIdentity
from llm_oracle.models import Action, OracleDecision, Side
from llm_oracle.report.spec import Candidate

NEUTRAL_STOP = 0.25  # OracleDecision's upper bound: never tighter than the money rules' stop


def confirms(decision: OracleDecision | None, side: Side, min_confidence: float) -> bool:
    """What the strategy enters on: the candidate's side, enough confidence, a stop."""
    return (
        decision is not None
        and decision.action is Action(side.value)
        and decision.confidence >= min_confidence
        and decision.stop_loss is not None
    )


def neutral(side: Side, min_confidence: float) -> OracleDecision:
    return OracleDecision(
        action=Action(side.value),
        confidence=min_confidence,
        stop_loss=NEUTRAL_STOP,
        reasoning="report variant: neutral entry (money rules' stop and target)",
    )


def _table(
    name: str,
    source: SourceIdentity,
    candidates: Sequence[Candidate],
    decide: list[OracleDecision | None],
    reviews: dict[str, OracleDecision],
) -> DecisionTable:
    entries = {c.key: d for c, d in zip(candidates, decide, strict=True)}
    return DecisionTable(name=name, source=source, entries=entries, reviews=reviews)


def identity(
    source: SourceIdentity, candidates: Sequence[Candidate], reviews: dict[str, OracleDecision]
) -> DecisionTable:
    return _table("identity", source, candidates, [c.decision for c in candidates], reviews)


def prefilter(
    source: SourceIdentity,
    candidates: Sequence[Candidate],
    reviews: dict[str, OracleDecision],
    min_confidence: float,
) -> DecisionTable:
    decide = [
        c.decision
        if confirms(c.decision, c.side, min_confidence)
        else neutral(c.side, min_confidence)
        for c in candidates
    ]
    return _table("prefilter", source, candidates, decide, reviews)


def inverted(
    source: SourceIdentity,
    candidates: Sequence[Candidate],
    reviews: dict[str, OracleDecision],
    min_confidence: float,
) -> DecisionTable:
    decide = [
        None if confirms(c.decision, c.side, min_confidence) else neutral(c.side, min_confidence)
        for c in candidates
    ]
    return _table("inverted", source, candidates, decide, reviews)


def placebo_order(sides: Sequence[Side], seed: int) -> np.ndarray:
    """index[i] = whose decision candidate i gets: a permutation within each side."""
    rng = np.random.default_rng(seed)
    order = np.arange(len(sides))
    for side in Side:
        members = np.flatnonzero(np.array([s is side for s in sides], dtype=bool))
        order[members] = members[rng.permutation(len(members))]
    return order


def placebo(
    source: SourceIdentity,
    candidates: Sequence[Candidate],
    reviews: dict[str, OracleDecision],
    seed: int,
) -> DecisionTable:
    order = placebo_order([c.side for c in candidates], seed)
    decide = [candidates[j].decision for j in order]
    return _table(f"placebo-{seed}", source, candidates, decide, reviews)
