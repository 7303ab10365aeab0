"""A deterministic local policy over the same indicators the LLM sees.

It is the offline default, the fallback when a paid backend fails, and the backend the demo
records. Same request in, same decision out, on every machine: no clock, no randomness.
"""

from __future__ import annotations

from llm_oracle.backends.base import Backend, BackendIdentity, BackendResult
from llm_oracle.config import RulesConfig
from llm_oracle.models import Action, OracleDecision, OracleRequest, Purpose, Side
from llm_oracle.prompt import canonical_settings

RULES_MODEL = "rules-v1"  # bump when the policy below changes: it is part of the decision key


class RulesBackend(Backend):
    def __init__(self, config: RulesConfig | None = None) -> None:
        self.config = config or RulesConfig()
        # Its parameters change its answers (a higher min_stop, another stop): part of the key.
        self.identity = BackendIdentity(
            name="rules",
            model=RULES_MODEL,
            prompt_version="none",
            settings=canonical_settings(self.config.model_dump(mode="json")),
        )

    async def decide(self, request: OracleRequest, deadline: float | None = None) -> BackendResult:
        # Local: nothing is sent to a provider, so nothing counts against request budgets.
        return BackendResult(decision=self.decide_now(request), attempts=0)

    def decide_now(self, request: OracleRequest) -> OracleDecision:
        if request.purpose is Purpose.ENTRY:
            return self._entry(request)
        return self._exit_review(request)

    def _entry(self, request: OracleRequest) -> OracleDecision:
        ind = request.indicators
        assert request.candidate is not None  # guaranteed by OracleRequest validation
        sign = 1.0 if request.candidate is Side.LONG else -1.0
        # Close vs EMA as a percentage: a smaller value means a higher EMA.
        checks = {
            "trend": sign * ind.ema200_pct > 0,
            "momentum": sign * ind.macd_hist_pct > 0,
            "fast above slow": sign * (ind.ema21_pct - ind.ema9_pct) > 0,
            "volume": ind.volume_ratio >= 1.0,
            "rsi room": (ind.rsi < 70) if sign > 0 else (ind.rsi > 30),
        }
        passed = [name for name, ok in checks.items() if ok]
        if not checks["trend"]:
            return OracleDecision.hold("against the EMA200 regime")
        confidence = round(0.3 + 0.14 * len(passed), 2)
        cfg = self.config
        stop = min(max(cfg.atr_stop_multiplier * ind.atr_pct / 100, cfg.min_stop), cfg.max_stop)
        # Fees are paid twice; the target must clear them with room to spare.
        round_trip = 2 * request.fees.taker
        target = max(cfg.reward_risk * stop, 3 * round_trip)
        return OracleDecision(
            action=Action(request.candidate.value),
            confidence=confidence,
            stop_loss=round(stop, 5),
            take_profit=round(target, 5),
            reasoning="rules: " + ", ".join(passed),
        )

    def _exit_review(self, request: OracleRequest) -> OracleDecision:
        ind = request.indicators
        assert request.position is not None
        sign = 1.0 if request.position.side is Side.LONG else -1.0
        momentum_against = (
            sign * ind.macd_hist_pct < 0 and sign * (ind.ema21_pct - ind.ema9_pct) < 0
        )
        if momentum_against and request.position.profit_pct < 0:
            return OracleDecision(
                action=Action.EXIT, confidence=0.7, reasoning="rules: momentum turned, in loss"
            )
        return OracleDecision(action=Action.HOLD, confidence=0.6, reasoning="rules: keep")
