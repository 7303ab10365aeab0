"""Deterministic, versioned prompt rendering and the decision key.

The same request always renders to the same text, byte for byte: static instructions (the system
part) first, market data last. Bump PROMPT_VERSION whenever the rendered text changes: it is part
of the decision key, so old journal rows are never replayed as answers to a prompt they were not
given.

Prompt caching does not apply, and is not relied on: the static instructions are 1,008
characters (about 250 tokens), a whole request with 24 candles and its per-question response
schema about 2,800 characters (about 700 tokens), below even the smallest prefix Gemini caches
implicitly (about 1,024 tokens on 3 Flash, 4,096 on 3.5+ Flash). Padding the prompt to reach it
would cost more than the cached-token discount saves.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from llm_oracle.models import OracleRequest, Purpose

PROMPT_VERSION = "v1"

SYSTEM_INSTRUCTIONS = """\
You are a risk-aware trading assistant for USDT perpetual futures on short (3-minute) candles.
You receive anonymised market data: no instrument name, no date, no absolute price. Candle prices
are percentages relative to the latest close; volume is relative to the window's mean volume.

Rules:
- For an entry request, a local pre-filter proposes a side. Answer with that side to confirm it,
  or "hold" to veto. Never answer the opposite side or "exit".
- For an exit review of an open position, answer "exit" to close it now or "hold" to keep it.
- confidence is your probability (0..1) that the answer is right.
- stop_loss and take_profit are distances from the current price as fractions (0.01 = 1%).
  Every long or short answer must carry a stop_loss; keep it beyond normal noise (about 1-3 ATR).
- Round-trip trading fees are given; a trade is only worth taking if the expected move clearly
  exceeds them.
- reasoning: one or two short sentences.
Answer with JSON only, matching the response schema."""


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    system: str
    user: str


def render(request: OracleRequest) -> RenderedPrompt:
    ind = request.indicators
    lines = [f"purpose: {request.purpose.value}"]
    if request.purpose is Purpose.ENTRY and request.candidate is not None:
        lines.append(f"pre-filter side: {request.candidate.value}")
    if request.position is not None:
        pos = request.position
        lines.append(
            f"open position: {pos.side.value}, profit after fees {pos.profit_pct}% on margin, "
            f"held {pos.candles_held} candles, leverage {pos.leverage}x"
        )
    lines += [
        f"fees per side: maker {request.fees.maker}, taker {request.fees.taker}",
        f"timeframe: {request.timeframe}",
        (
            f"indicators: RSI7 {ind.rsi}; MACD(6,12,9) line {ind.macd_pct}% signal "
            f"{ind.macd_signal_pct}% hist {ind.macd_hist_pct}%; close vs EMA9 {ind.ema9_pct}%, "
            f"EMA21 {ind.ema21_pct}%, EMA200 {ind.ema200_pct}%; ATR14 {ind.atr_pct}%; "
            f"volume ratio {ind.volume_ratio}"
        ),
        f"candles, oldest first (open high low close volume), {len(request.candles)} rows:",
    ]
    lines += [f"{c.o} {c.h} {c.l} {c.c} {c.v}" for c in request.candles]
    return RenderedPrompt(system=SYSTEM_INSTRUCTIONS, user="\n".join(lines))


def decision_key(
    request: OracleRequest, backend: str, model: str, prompt_version: str, settings: str = ""
) -> str:
    """sha256 over the canonical request and everything that could change the answer.

    `settings` is the backend's canonical JSON of its answer-changing settings (see
    `BackendIdentity.settings`): rules parameters, or Gemini's schema version, sampling and
    thinking settings and stop bounds. Changing any of them asks anew instead of replaying
    answers given under other settings.
    """
    material = "\n".join((prompt_version, backend, model, settings, request.canonical_json()))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def canonical_settings(settings: dict[str, object]) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))
