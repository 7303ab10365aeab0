"""The real `freqtrade trade` in LIVE mode (dry_run false) against the emulated Bybit account.

One trade end to end: the entry fills on the exchange after Freqtrade set one-way mode, isolated
margin and leverage <= 3; a conditional stop appears on the exchange within a bot loop; the price
is steered through it, the exchange fills it, and Freqtrade closes the trade with exit reason
`stoploss_on_exchange`. No request the emulator does not know, and the API key and secret
appear in no log and not in the trades DB.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.live_bot import SYMBOL, body, live_bot, request_index

pytestmark = pytest.mark.integration

# Freqtrade's loop is process_throttle_secs (1 s) plus its own work; the stop must follow the
# fill within one loop of noticing it.
ONE_LOOP_S = 3.0


def test_live_entry_stop_on_exchange_and_stoploss_exit(tmp_path: Path) -> None:
    with live_bot(tmp_path) as bot:
        start_balance = bot.exchange_balance()
        bot.pin_price()  # no feed move during the test: every price below is steered

        entry = bot.wait_for_entry_order()
        assert entry["orderType"] == "Limit" and entry["stopOrderType"] == ""
        bot.set_price(entry["price"])  # the price touches the limit: a maker fill
        trade = bot.wait_until(bot.open_trade, 20, "Freqtrade to record the filled entry")
        stop = bot.wait_until(bot.exchange_stop_order, 10, "a stop order on the exchange")

        # The entry, as the exchange filled it, and the settings made before it.
        (fill,) = [
            e for e in bot.exchange_state()["executions"] if e["orderId"] == entry["orderId"]
        ]
        assert fill["isMaker"] and Decimal(fill["execPrice"]) == Decimal(entry["price"])
        assert trade["open_rate"] == pytest.approx(float(entry["price"]))
        records = bot.emulator.requests
        placed = request_index(records, lambda r: r["path"] == "/v5/order/create")
        before = records[:placed]

        def done(path: str, **fields: object) -> bool:
            return any(
                r["path"] == path
                and r["ret_code"] == 0
                and all(body(r).get(k) == v for k, v in fields.items())
                for r in before
            )

        assert done("/v5/position/switch-mode", mode=0)
        assert done("/v5/account/set-margin-mode", setMarginMode="ISOLATED_MARGIN")
        leverage = [
            Decimal(body(r)["buyLeverage"])
            for r in before
            if r["path"] == "/v5/position/set-leverage" and body(r)["symbol"] == SYMBOL
        ]
        assert leverage and leverage[-1] <= 3 and leverage[-1] == Decimal(str(trade["leverage"]))
        account = bot.exchange_state()
        assert (account["marginMode"], account["positionMode"]) == ("ISOLATED_MARGIN", 0)
        position = bot.exchange_position()
        assert position is not None and Decimal(position["leverage"]) <= 3
        assert Decimal(position["size"]) == Decimal(str(trade["amount"]))

        # The stop: reduce-only, the whole position, on the last price (config.json), the right
        # direction.
        long = trade["is_short"] == 0
        assert (stop["side"], stop["triggerDirection"]) == (("Sell", 2) if long else ("Buy", 1))
        assert (stop["reduceOnly"], stop["triggerBy"], stop["orderType"]) == (
            True,
            "LastPrice",
            "Market",
        )
        assert Decimal(stop["qty"]) == Decimal(position["size"])
        lag_s = (int(stop["createdTime"]) - int(fill["execTime"])) / 1000
        assert 0 <= lag_s <= ONE_LOOP_S, f"stop placed {lag_s:.2f}s after the fill"

        # Through the stop: the exchange fills it, Freqtrade records the stop-loss exit.
        bot.run_through(stop, trade)
        filled = [o for o in bot.exchange_orders() if o["orderId"] == stop["orderId"]]
        assert filled[0]["orderStatus"] == "Filled"
        assert Decimal(bot.exchange_position()["size"]) == 0
        closed = bot.wait_until(bot.closed_trades, 20, "Freqtrade to close the trade")
        assert closed[0]["exit_reason"] == "stoploss_on_exchange"
        assert closed[0]["close_rate"] == pytest.approx(float(filled[0]["avgPrice"]))
        # Freqtrade's profit and the exchange's wallet agree (fees from the orders' fee detail).
        moved = float(bot.exchange_balance() - start_balance)
        assert closed[0]["close_profit_abs"] == pytest.approx(moved, abs=1e-6)
        # Freqtrade's last step after a stop exit is its one-candle "Auto lock" of the pair. A
        # SIGTERM lands as a KeyboardInterrupt wherever the bot is; during that commit it would
        # roll the session back (a traceback at cleanup), so let the bot finish first.
        bot.wait_until(
            lambda: [x for x in bot.pair_locks() if x["reason"] == "Auto lock"],
            20,
            "Freqtrade to finish handling the exit",
        )
        # SIGTERM: Freqtrade cleans up ("Cleaning up modules") and exits 130 (its SIGINT path).
        assert bot.stop() == 130
        assert "Cleaning up modules" in bot.log()

    assert bot.emulator.unexpected_requests() == []
    assert bot.emulator.internal_errors() == []
    answered = {(r["path"], r["ret_code"]) for r in bot.private_requests()}
    assert {code for _, code in answered} <= {0, 110043}, answered  # 110043: leverage unchanged
    assert bot.secrets_found() == []
    assert "Traceback" not in bot.log()


def test_stop_filled_while_the_bot_is_down_is_reconciled_on_restart(tmp_path: Path) -> None:
    """kill -9, the price runs through the stop (the exchange fills it alone), restart: Freqtrade
    finds the filled stop by its id at startup and closes the trade as `stoploss_on_exchange`."""
    with live_bot(tmp_path) as bot:
        bot.pin_price()
        entry, trade = bot.fill_entry()
        stop = bot.wait_until(bot.exchange_stop_order, 10, "a stop order on the exchange")
        # Freqtrade commits the stop to its DB at the end of the loop that placed it; a kill
        # before that leaves an order it does not know (then found by history: sold_on_exchange).
        bot.wait_until(
            lambda: [o for o in bot.orders() if o["order_id"] == stop["orderId"]],
            10,
            "Freqtrade to record the stop in its DB",
        )
        assert bot.kill() == -9
        bot.run_through(stop, trade)
        (filled,) = [o for o in bot.exchange_orders() if o["orderId"] == stop["orderId"]]
        assert filled["orderStatus"] == "Filled" and Decimal(bot.exchange_position()["size"]) == 0
        assert bot.open_trade() is not None  # the DB does not know yet

        bot.start()
        closed = bot.wait_until(bot.closed_trades, 40, "the restarted bot to close the trade")
        assert closed[0]["exit_reason"] == "stoploss_on_exchange"
        assert closed[0]["close_rate"] == pytest.approx(float(filled["avgPrice"]))
        assert [o["status"] for o in bot.orders() if o["ft_order_side"] == "stoploss"] == ["closed"]
        bot.stop()
    assert bot.exchange_stop_order() is None  # no second stop was placed
    assert bot.emulator.unexpected_requests() == [] and bot.emulator.internal_errors() == []
    assert bot.secrets_found() == []
