"""The exchange stop follows the strategy: placed at its stop, moved as the trailing stop tightens.

Real `freqtrade trade` (live) against the emulator with config.json's order settings: the stop
lives on the exchange as a conditional market order; `custom_stoploss` trails once the trade is
2x its fees in profit, and Freqtrade replaces the exchange order (at most every
`stoploss_on_exchange_interval`, 30 s).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.live_bot import _rows, live_bot

pytestmark = pytest.mark.integration

BTC_TICK = Decimal("0.1")


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
        bot.stop()
    assert bot.emulator.unexpected_requests() == [] and bot.secrets_found() == []
