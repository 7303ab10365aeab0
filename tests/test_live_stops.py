"""The exchange stop follows the strategy: placed at its stop, moved as the trailing stop tightens.

Real `freqtrade trade` (live) against the emulator with config.json's order settings: the stop
lives on the exchange as a conditional market order; `custom_stoploss` trails once the trade is
2x its fees in profit, and Freqtrade replaces the exchange order (at most every
`stoploss_on_exchange_interval`, 30 s). Then the fee exit: taken at the first price that nets
3x the fees the exchange charges, which it does by the exchange's own wallet.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.live_bot import BTC_TICK, SYMBOL, _rows, live_bot

pytestmark = pytest.mark.integration


def test_exchange_stop_sits_at_the_strategy_stop_and_trails(tmp_path: Path) -> None:
    with live_bot(tmp_path) as bot:
        bot.pin_price()
        entry, trade = bot.fill_entry()
        first = bot.wait_until(bot.exchange_stop_order, 10, "a stop order on the exchange")
        short = trade["is_short"] == 1
        assert short  # the harness's candidate; the arithmetic below is written for it

        # At the stop the strategy computed (Freqtrade rounds it to the tick, outward).
        strategy_stop = Decimal(str(bot.open_trade()["stop_loss"]))
        assert abs(Decimal(first["triggerPrice"]) - strategy_stop) <= BTC_TICK
        open_rate = Decimal(str(trade["open_rate"]))
        assert strategy_stop < open_rate * Decimal("1.025")  # tighter than the hard stop

        # In profit past the trailing start (2x fees, about 0.44% at 2x) but short of the fee
        # exit (3x fees, about 0.66%): the trailing stop takes over from the initial one.
        [custom] = _rows(
            bot.db_path,
            "SELECT cd_value FROM trade_custom_data WHERE cd_key = 'oracle' AND ft_trade_id = ?",
            (trade["id"],),
        )
        atr = Decimal(str(json.loads(custom["cd_value"])["atr"]))
        price = (open_rate * Decimal("0.9972")).quantize(BTC_TICK)
        bot.set_price(price)
        expected = price + Decimal("1.5") * atr
        assert expected < Decimal(first["triggerPrice"])

        def moved() -> dict | None:
            stop = bot.exchange_stop_order()
            return stop if stop and stop["orderId"] != first["orderId"] else None

        second = bot.wait_until(moved, 60, "the exchange stop to move")
        assert abs(Decimal(second["triggerPrice"]) - expected) <= 2 * BTC_TICK
        (old,) = [o for o in bot.exchange_orders() if o["orderId"] == first["orderId"]]
        assert old["orderStatus"] == "Deactivated"  # cancelled, never two stops at once
        assert bot.open_trade() is not None  # still open: no fee exit, no stop hit

        # The take-profit at the first price that allows it: walk the price into profit in 0.05%
        # steps until the strategy asks for its exit (a reduce-only limit on the exchange; the
        # higher of the fee floor and the oracle's target), fill it there, and count what the
        # exchange charged and paid.
        exit_order = None
        for step in range(1, 13):
            bot.set_price((price * (1 - Decimal("0.0005") * step)).quantize(BTC_TICK))
            try:
                exit_order = bot.wait_until(bot.exit_limit_order, 4, "a take-profit order")
                break
            except AssertionError:
                continue  # not in profit enough yet: one more step
        assert exit_order is not None, "no take-profit order within 0.6% of profit"
        assert step > 1  # the walk started short of the exit, so it fired where the rule allows
        bot.set_price(exit_order["price"])
        [closed] = bot.wait_until(bot.closed_trades, 20, "the take-profit to close the trade")
        assert closed["exit_reason"] == "roi"
        fills = [e for e in bot.exchange_state()["executions"] if e["symbol"] == SYMBOL]
        fees = sum(Decimal(e["execFee"]) for e in fills)
        assert len(fills) == 2 and fees > 0  # the entry and the exit, both charged
        # What the exchange wallet gained over the whole trade is net of both fees, and at least
        # 3x them; Freqtrade's books agree. (Its `fee_open_cost` is not compared: Freqtrade
        # recomputes it on the margin, not the notional, when the entry order is applied.)
        gained = bot.exchange_balance() - bot.account.balance
        assert gained >= 3 * fees, (gained, fees)
        assert abs(Decimal(str(closed["close_profit_abs"])) - gained) <= Decimal("0.000001")
        assert bot.exchange_position() is None or Decimal(bot.exchange_position()["size"]) == 0
        bot.stop()
    assert bot.emulator.unexpected_requests() == [] and bot.secrets_found() == []
