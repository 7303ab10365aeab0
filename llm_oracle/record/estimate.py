"""What a recording will ask and cost, before anything is paid.

The counting pass is the same backtest with misses answered by the local `rules` backend instead
of the source (nothing is sent): every question it asks is reported by the oracle in the child
(`link`), with its prompt's length. Entry questions do not depend on the answers (the pre-filter
picks them), so their number is exact; exit reviews depend on which trades the answers open,
and the rules answers stand in for the source's, so their number is an estimate.

Tokens and USD per decision come from the journal's own answers of the same backend and model
(measured), priced at the configured tier; without any, from the prompts' length (4 characters a
token) and an assumed answer size, and the line says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llm_oracle.backends.gemini import cost_usd
from llm_oracle.config import TIER_PRICE_FACTOR, BackendName, GeminiTier, OracleConfig
from llm_oracle.journal import Journal
from llm_oracle.models import Usage
from llm_oracle.record.link import AskEvent, DoneEvent, QuestionEvent

CHARS_PER_TOKEN = 4.0  # rough for English and numbers; used only without measured answers
ASSUMED_ANSWER_TOKENS = 150  # output + thinking of one decision at thinking_level low (a guess)
_MEASURED_ROWS = 1000  # the newest answers averaged


@dataclass(slots=True)
class Counted:
    entries: int = 0
    reviews: int = 0
    chars: int = 0

    @property
    def decisions(self) -> int:
        return self.entries + self.reviews

    def add(self, event: AskEvent | QuestionEvent | DoneEvent) -> None:
        if isinstance(event, AskEvent):
            self.entries += event.entries
            self.reviews += event.reviews
            self.chars += event.chars


@dataclass(frozen=True, slots=True)
class Estimate:
    counted: Counted
    calls: float
    tokens: float
    usd: float
    usd_standard: float
    basis: str

    def line(self, tier: str | None) -> str:
        c = self.counted
        price = (
            ""
            if tier in (None, GeminiTier.STANDARD.value)
            else f" at the {tier} price (standard tier ${self.usd_standard:.4f})"
        )
        return (
            f"llm-oracle record --estimate: {c.decisions} decisions to ask ({c.entries} entries, "
            f"exact; {c.reviews} exit reviews, estimated with rules answers standing in), "
            f"~{self.calls:.0f} calls, ~{self.tokens:.0f} tokens, ~${self.usd:.4f}{price}; "
            f"{self.basis}"
        )


def _measured(journal: Path, backend: str, model: str) -> tuple[int, Usage, float] | None:
    """(answers averaged, mean usage of an answer, mean requests per decision)."""
    if not journal.exists():
        return None
    with Journal(journal, create=False) as j:
        row = j.query(
            "SELECT COUNT(*), AVG(prompt_tokens), AVG(output_tokens), AVG(thinking_tokens), "
            "AVG(cached_tokens), AVG(attempts) FROM (SELECT * FROM decisions WHERE backend = ? "
            "AND model = ? AND error_kind IS NULL AND attempts > 0 ORDER BY id DESC LIMIT ?)",
            (backend, model, _MEASURED_ROWS),
        )[0]
    n = int(row[0])  # type: ignore[call-overload]
    if n == 0:
        return None
    usage = Usage(
        prompt_tokens=round(float(row[1])),  # type: ignore[arg-type]
        output_tokens=round(float(row[2])),  # type: ignore[arg-type]
        thinking_tokens=round(float(row[3])),  # type: ignore[arg-type]
        cached_tokens=round(float(row[4])),  # type: ignore[arg-type]
    )
    return n, usage, float(row[5])  # type: ignore[arg-type]


def estimate(
    counted: Counted, config: OracleConfig, journal: Path, factor: float | None = None
) -> Estimate:
    """`factor`: the price's share of the standard price (default: the configured tier's)."""
    n = counted.decisions
    if config.replay.source is not BackendName.GEMINI:
        return Estimate(counted, 0, 0, 0.0, 0.0, f"{config.replay.source.value}: local, free")
    gemini = config.gemini
    factor = TIER_PRICE_FACTOR[gemini.tier] if factor is None else factor
    measured = _measured(journal, "gemini", gemini.model)
    if measured is not None:
        answers, usage, per_decision = measured
        basis = (
            f"tokens per decision measured on the journal's newest {answers} answers of "
            f"{gemini.model}"
        )
    else:
        prompt = round(counted.chars / CHARS_PER_TOKEN / n) if n else 0
        usage = Usage(prompt_tokens=prompt, output_tokens=ASSUMED_ANSWER_TOKENS)
        per_decision = 1.0
        basis = (
            f"no answers of {gemini.model} in the journal yet: prompt tokens from the prompts' "
            f"length (~{CHARS_PER_TOKEN:g} characters a token), {ASSUMED_ANSWER_TOKENS} answer "
            "tokens assumed; run --estimate again after some decisions for a measured figure"
        )
    tokens = usage.prompt_tokens + usage.output_tokens + usage.thinking_tokens
    one = cost_usd(usage, gemini.price, factor)
    standard = cost_usd(usage, gemini.price)
    return Estimate(
        counted,
        calls=n * per_decision,
        tokens=n * tokens,
        usd=n * one,
        usd_standard=n * standard,
        basis=basis,
    )
