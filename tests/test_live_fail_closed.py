"""Money-rule callbacks forced to raise in the real `freqtrade trade` (live): no entry while the
entry gate fails, and the hard stop on the exchange while the stop callback fails.

The strategy under test is the shipped one with two parts broken from outside: the open-risk
count raises on its first two calls (so `confirm_trade_entry` raises inside), and
`custom_stoploss` / `custom_roi` are handed a trade that breaks them (so they raise inside their
own fail-closed guard). Freqtrade itself answers an exception in `confirm_trade_entry` with
"yes": had the guard not answered "no", the first candidate loop would have entered and the gate
would never have been asked a second time.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from tests.factories import ROOT
from tests.live_bot import BTC_TICK, live_bot

pytestmark = pytest.mark.integration

GATE_FAILURES = 2

BROKEN_STRATEGY = f"""
from GeminiOracleStrategy import GeminiOracleStrategy


class BrokenMoneyRulesStrategy(GeminiOracleStrategy):
    gate_calls = 0

    def _open_risk(self, round_trip_fee):
        type(self).gate_calls += 1
        if type(self).gate_calls <= {GATE_FAILURES}:
            raise RuntimeError("injected open-risk failure")
        return super()._open_risk(round_trip_fee)

    def custom_stoploss(self, pair, trade, current_time, current_rate, current_profit,
                        after_fill, **kwargs):
        return super().custom_stoploss(pair, None, current_time, current_rate,
                                       current_profit, after_fill, **kwargs)

    def custom_roi(self, pair, trade, current_time, trade_duration, entry_tag, side, **kwargs):
        return super().custom_roi(pair, None, current_time, trade_duration, entry_tag, side,
                                  **kwargs)
"""


def test_raising_money_rules_mean_no_entry_and_the_hard_stop(tmp_path: Path) -> None:
    strategies = tmp_path / "strategies"
    strategies.mkdir()
    shutil.copy(ROOT / "strategies" / "GeminiOracleStrategy.py", strategies)
    (strategies / "BrokenMoneyRulesStrategy.py").write_text(BROKEN_STRATEGY)
    with live_bot(tmp_path, strategy="BrokenMoneyRulesStrategy", strategy_path=strategies) as bot:
        bot.pin_price()
        gate_failed = "confirm_trade_entry failed; no entry"
        bot.wait_for_log(gate_failed, bot.after_signal(90))
        assert bot.entry_order() is None  # the failed gate sent nothing
        entry, trade = bot.fill_entry()
        # The gate was asked again after each failure: neither failure let the entry through.
        assert bot.log().count(gate_failed) == GATE_FAILURES
        opened = [o["orderId"] for o in bot.exchange_orders() if not o["reduceOnly"]]
        assert opened == [entry["orderId"]]

        # The stop callback raises on every call: the exchange stop is the hard stop
        # (config.json's -5% on margin, 2.5% of price at 2x), not the strategy's tighter one.
        stop = bot.wait_until(bot.exchange_stop_order, 10, "a stop order on the exchange")
        assert trade["is_short"] == 1 and trade["leverage"] == 2.0
        hard = Decimal(str(trade["open_rate"])) * (1 + Decimal("0.05") / 2)
        assert abs(Decimal(stop["triggerPrice"]) - hard) <= 2 * BTC_TICK
        bot.wait_for_log("custom_stoploss failed; keeping the current stop", 20)
        # Deep in profit (well past every fee exit): the broken take-profit rule takes no exit.
        bot.set_price((Decimal(str(trade["open_rate"])) * Decimal("0.98")).quantize(BTC_TICK))
        bot.wait_for_log("custom_roi failed; no take-profit exit", 20)
        assert bot.exit_limit_order() is None and bot.open_trade() is not None
        assert bot.exchange_stop_order() is not None  # still protected on the exchange
        bot.stop()
    assert bot.emulator.unexpected_requests() == [] and bot.secrets_found() == []
