"""The emulator's private Bybit v5 API through a real ccxt `bybit` client (as Freqtrade uses it).

Prices are steered with the emulator's override (deterministic numbers for the arithmetic);
one test drives the matching from the candle feed and the background tick alone.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest

from bybit_emulator import AccountConfig, CandleSource, Emulator, start_emulator
from tests.factories import DATA_DIR
from tests.live_bot import wait_until

KEY = "unit-test-key-0001"
SECRET = "unit-test-secret-9f8e7d"
BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
D = Decimal


def make_client(url: str, key: str = KEY, secret: str = SECRET) -> ccxt.bybit:
    api = dict.fromkeys(("public", "private", "spot", "futures", "v2"), url)
    return ccxt.bybit(
        {
            "urls": {"api": api},
            "options": {"fetchMarkets": {"types": ["linear"]}, "defaultSettle": "USDT"},
            "enableRateLimit": False,
            "apiKey": key,
            "secret": secret,
        }
    )


def start(tmp_path: Path, **kwargs: Any) -> Emulator:
    accounts = kwargs.pop("accounts", None) or [
        AccountConfig(KEY, SECRET, kwargs.pop("balance", D("10000")), name="unit")
    ]
    kwargs.setdefault("test_control", True)
    return start_emulator(accounts=accounts, log_path=tmp_path / "emulator.jsonl", **kwargs)


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    with start(tmp_path) as emulator:
        emulator.set_price("BTCUSDT", "100000")
        emulator.set_price("ETHUSDT", "2500")
        yield emulator
    assert emulator.internal_errors() == []
    assert emulator.unexpected_requests() == []


@pytest.fixture
def ex(emu: Emulator) -> ccxt.bybit:
    client = make_client(emu.url)
    client.load_markets()
    return client


def state(emu: Emulator, label: str = "unit") -> dict[str, Any]:
    return emu.state()["accounts"][label]


def wallet(emu: Emulator) -> Decimal:
    return D(state(emu)["walletBalance"])


def position(emu: Emulator, symbol: str = "BTCUSDT") -> dict[str, Any]:
    return next(p for p in state(emu)["positions"] if p["symbol"] == symbol)


def order(ex: ccxt.bybit, order_id: str, symbol: str = BTC) -> dict[str, Any]:
    return ex.fetch_order(order_id, symbol, {"acknowledged": True})


def fee(value: Decimal, rate: Decimal) -> Decimal:
    return (value * rate).quantize(D("1e-8"))


# ---- signatures -------------------------------------------------------------------------------


def test_unknown_key_is_an_authentication_error_and_creates_nothing(emu: Emulator) -> None:
    bad = make_client(emu.url, key="not-a-known-key-123")
    with pytest.raises(ccxt.AuthenticationError, match="10003"):
        bad.create_order(BTC, "market", "buy", 0.01)
    assert state(emu)["orders"] == []
    failed = [r for r in emu.requests if r["ret_code"] == 10003]
    assert failed and failed[-1]["api_key"] == "no***"


def test_wrong_secret_is_an_authentication_error(emu: Emulator, ex: ccxt.bybit) -> None:
    bad = make_client(emu.url, secret="the-wrong-secret")
    bad.markets, bad.markets_by_id = ex.markets, ex.markets_by_id  # skip loading (signed)
    bad.options.update(ex.options)
    with pytest.raises(ccxt.AuthenticationError, match="10004") as err:
        bad.create_order(BTC, "market", "buy", 0.01)
    # As Bybit does, the answer echoes the signed origin string, API key included: whatever
    # logs it leaks the key (the strategy's log filter must catch that).
    assert "origin_string[" in str(err.value) and KEY in str(err.value)
    with pytest.raises(ccxt.AuthenticationError):
        bad.fetch_balance()
    assert state(emu)["orders"] == []
    # The emulator's own request log never holds the key.
    answer = [r for r in emu.requests if r["ret_code"] == 10004]
    assert answer and all(KEY not in json.dumps(r) for r in answer)


@pytest.mark.parametrize("skew_ms", [-6_000, 2_000])
def test_stale_or_future_timestamp_is_refused(emu: Emulator, ex: ccxt.bybit, skew_ms: int) -> None:
    ex.nonce = lambda: ex.milliseconds() + skew_ms  # recvWindow is 5000 ms, Bybit allows +1 s
    with pytest.raises(ccxt.InvalidNonce, match="10002"):
        ex.create_order(BTC, "market", "buy", 0.01)
    assert state(emu)["orders"] == []
    ex.nonce = lambda: ex.milliseconds()
    ex.create_order(BTC, "market", "buy", 0.01)
    assert len(state(emu)["orders"]) == 1


def test_private_paths_are_unknown_without_accounts(tmp_path: Path) -> None:
    with start_emulator() as plain:
        client = make_client(plain.url)
        with pytest.raises(ccxt.ExchangeError, match="10404"):
            client.load_markets()  # ccxt asks coin info (private) when it has keys
        assert {r["path"] for r in plain.unexpected_requests()} == {"/v5/asset/coin/query-info"}


# ---- account settings -------------------------------------------------------------------------


def test_unified_account_balance_and_fees(emu: Emulator, ex: ccxt.bybit) -> None:
    assert ex.is_unified_enabled() == [False, True]
    balance = ex.fetch_balance()["USDT"]
    assert (balance["total"], balance["free"], balance["used"]) == (10000, 10000, 0)
    fees = ex.fetch_trading_fees()
    assert (fees[BTC]["maker"], fees[BTC]["taker"]) == (0.0002, 0.00055)
    assert ex.fetch_trading_fee(ETH)["taker"] == 0.00055


def test_leverage_is_refused_above_the_risk_tier(emu: Emulator, ex: ccxt.bybit) -> None:
    with pytest.raises(ccxt.BadRequest, match="110013"):
        ex.set_leverage(101, BTC)  # BTC tier 1: 100x
    with pytest.raises(ccxt.BadRequest, match="110013"):
        ex.set_leverage(26, "WIF/USDT:USDT")  # WIF tier 1: 25x
    ex.set_leverage(25, "WIF/USDT:USDT")
    ex.set_leverage(3, BTC)
    with pytest.raises(ccxt.BadRequest, match="110043"):  # unchanged, as Bybit answers
        ex.set_leverage(3, BTC)
    assert position(emu)["leverage"] == "3"
    assert ex.fetch_position(BTC)["leverage"] == 3


def test_leverage_follows_the_tier_of_the_open_position(tmp_path: Path) -> None:
    with start(tmp_path, balance=D("100000")) as emu:
        emu.set_price("BTCUSDT", "100000")
        ex = make_client(emu.url)
        ex.set_leverage(50, BTC)
        ex.create_order(BTC, "market", "buy", 21)  # 2.1M USDT: BTC tier 2 (max 90x)
        with pytest.raises(ccxt.BadRequest, match="110013"):
            ex.set_leverage(95, BTC)
        ex.set_leverage(90, BTC)
        assert position(emu)["riskId"] == 2


def test_isolated_margin_mode_unified_and_classic(tmp_path: Path) -> None:
    classic = AccountConfig("classic-key-0001", "classic-secret", unified=False, name="classic")
    uta = AccountConfig(KEY, SECRET, name="unit")
    with start(tmp_path, accounts=[uta, classic]) as emu:
        emu.set_price("BTCUSDT", "100000")
        ex = make_client(emu.url)
        ex.set_margin_mode("isolated", BTC, {"leverage": 3})  # account-wide on UTA
        assert state(emu)["marginMode"] == "ISOLATED_MARGIN"
        ex.set_margin_mode("isolated", BTC, {"leverage": 3})  # unchanged: still OK
        ex.create_order(BTC, "market", "buy", 0.01)
        with pytest.raises(ccxt.BadRequest):  # not while a position is open
            ex.set_margin_mode("cross", BTC, {"leverage": 3})
        assert position(emu)["liqPrice"]  # isolated liquidation price

        old = make_client(emu.url, "classic-key-0001", "classic-secret")
        assert old.is_unified_enabled() == [False, False]
        old.set_margin_mode("isolated", BTC, {"leverage": 2})  # /v5/position/switch-isolated
        with pytest.raises(ccxt.MarginModeAlreadySet):
            old.set_margin_mode("isolated", BTC, {"leverage": 2})
        assert emu.state()["accounts"]["classic"]["positions"][0]["tradeMode"] == 1
        assert old.fetch_balance()["USDT"]["free"] == 10000
        assert any(r["path"] == "/v5/position/switch-isolated" for r in emu.requests)


def test_position_mode_one_way_only(emu: Emulator, ex: ccxt.bybit) -> None:
    assert ex.set_position_mode(False)["retCode"] == 0  # already one-way: OK
    with pytest.raises(ccxt.BadRequest):
        ex.set_position_mode(True)  # hedge mode is not emulated
    ex.create_order(BTC, "market", "buy", 0.01)
    with pytest.raises(ccxt.BadRequest, match="110024"):
        ex.set_position_mode(True)


# ---- orders and fills -------------------------------------------------------------------------


def test_market_order_fills_at_last_with_slippage_and_taker_fee(tmp_path: Path) -> None:
    with start(tmp_path, slippage_bps=10) as emu:
        emu.set_price("BTCUSDT", "100000")
        ex = make_client(emu.url)
        ex.set_leverage(5, BTC)
        placed = ex.create_order(BTC, "market", "buy", 0.01)
        assert placed["status"] is None  # Bybit's create answers ids only
        filled = order(ex, placed["id"])
        assert filled["status"] == "closed" and filled["type"] == "market"
        assert filled["average"] == 100100  # last + 10 bps
        assert filled["fee"] == {"cost": float(fee(D("1001"), D("0.00055"))), "currency": "USDT"}
        assert wallet(emu) == D(10000) - fee(D("1001"), D("0.00055"))
        pos = ex.fetch_position(BTC)
        assert (pos["side"], pos["contracts"], pos["entryPrice"]) == ("long", 0.01, 100100)
        assert pos["initialMargin"] == pytest.approx(1001 / 5)
        sell = order(
            ex, ex.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})["id"]
        )
        assert sell["average"] == 99900  # last - 10 bps


def test_crossing_limit_fills_at_once_as_taker(emu: Emulator, ex: ccxt.bybit) -> None:
    placed = ex.create_order(BTC, "limit", "buy", 0.01, 100050)  # ask is 100000.1
    trades = ex.fetch_my_trades(BTC)
    assert [(t["order"], t["price"], t["takerOrMaker"]) for t in trades] == [
        (placed["id"], 100000, "taker")  # the market price, better than the limit
    ]
    assert order(ex, placed["id"])["status"] == "closed"


def test_resting_limit_fills_as_maker_when_the_price_reaches_it(
    emu: Emulator, ex: ccxt.bybit
) -> None:
    placed = ex.create_order(BTC, "limit", "buy", 0.02, 99900)
    assert order(ex, placed["id"])["status"] == "open"
    assert [o["id"] for o in ex.fetch_open_orders(BTC)] == [placed["id"]]
    assert ex.fetch_balance()["USDT"]["used"] == pytest.approx(99900 * 0.02 / 10)  # order IM
    emu.set_price("BTCUSDT", "99950")
    assert order(ex, placed["id"])["status"] == "open"
    emu.set_price("BTCUSDT", "99850")
    filled = order(ex, placed["id"])
    assert (filled["status"], filled["average"], filled["filled"]) == ("closed", 99900, 0.02)
    assert filled["fee"]["cost"] == float(fee(D("1998"), D("0.0002")))  # maker rate
    assert ex.fetch_my_trades(BTC)[-1]["takerOrMaker"] == "maker"
    assert ex.fetch_open_orders(BTC) == []
    assert [o["id"] for o in ex.fetch_closed_orders(BTC)] == [placed["id"]]


def test_sell_limit_rests_above_and_fills_when_price_rises(emu: Emulator, ex: ccxt.bybit) -> None:
    placed = ex.create_order(ETH, "limit", "sell", 1, 2510)
    emu.set_price("ETHUSDT", "2510")
    filled = order(ex, placed["id"], ETH)
    assert (filled["status"], filled["average"]) == ("closed", 2510)
    assert ex.fetch_position(ETH)["side"] == "short"


def test_post_only_that_would_cross_is_rejected(emu: Emulator, ex: ccxt.bybit) -> None:
    crossing = ex.create_order(BTC, "limit", "buy", 0.01, 100000.1, {"postOnly": True})
    rejected = order(ex, crossing["id"])
    assert rejected["status"] == "canceled" and rejected["filled"] == 0
    assert rejected["info"]["rejectReason"] == "EC_PostOnlyWillTakeLiquidity"
    assert rejected["timeInForce"] == "PO"
    resting = ex.create_order(BTC, "limit", "buy", 0.01, 99999.9, {"postOnly": True})
    assert order(ex, resting["id"])["status"] == "open"
    assert ex.fetch_my_trades(BTC) == [] and wallet(emu) == 10000
    cancelled = ex.fetch_canceled_orders(BTC)
    assert [o["id"] for o in cancelled] == [crossing["id"]]


def test_ioc_limit_that_does_not_cross_is_cancelled(emu: Emulator, ex: ccxt.bybit) -> None:
    placed = ex.create_order(BTC, "limit", "buy", 0.01, 99000, {"timeInForce": "IOC"})
    assert order(ex, placed["id"])["status"] == "canceled"


def test_order_validation(emu: Emulator, ex: ccxt.bybit) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="110094"):  # below the 5 USDT minimum
        ex.create_order(ETH, "limit", "buy", 0.01, 100)
    with pytest.raises(ccxt.InsufficientFunds, match="110007"):
        ex.create_order(BTC, "limit", "buy", 5, 99000)  # 495k at 10x needs 49.5k
    with pytest.raises(ccxt.BadRequest):  # not a multiple of qtyStep 0.001
        ex.privatePostV5OrderCreate(
            {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market",
             "qty": "0.0015"}
        )  # fmt: skip
    ex.create_order(BTC, "limit", "buy", 0.01, 99000, {"clientOrderId": "mine-1"})
    with pytest.raises(ccxt.InvalidOrder, match="110072"):
        ex.create_order(BTC, "limit", "buy", 0.01, 99000, {"clientOrderId": "mine-1"})
    assert ex.fetch_open_orders(BTC)[0]["clientOrderId"] == "mine-1"


def test_reduce_only_never_increases_a_position(emu: Emulator, ex: ccxt.bybit) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="110017"):
        ex.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})
    ex.create_order(BTC, "market", "buy", 0.01)
    capped = ex.create_order(BTC, "market", "sell", 0.05, None, {"reduceOnly": True})
    closed = order(ex, capped["id"])
    assert closed["filled"] == 0.01 and closed["status"] == "closed"
    assert position(emu)["size"] == "0.000"  # flat, not short
    # A resting reduce-only order is cancelled once there is nothing left to reduce.
    ex.create_order(BTC, "market", "buy", 0.01)
    resting = ex.create_order(BTC, "limit", "sell", 0.01, 100100, {"reduceOnly": True})
    ex.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})
    emu.set_price("BTCUSDT", "100200")
    gone = order(ex, resting["id"])
    assert gone["status"] == "canceled" and gone["info"]["cancelType"] == "CancelByReduceOnly"
    assert position(emu)["size"] == "0.000"


def test_non_reduce_order_flips_a_position(emu: Emulator, ex: ccxt.bybit) -> None:
    ex.create_order(BTC, "market", "sell", 0.02)
    emu.set_price("BTCUSDT", "99000")
    ex.create_order(BTC, "market", "buy", 0.03)
    pos = ex.fetch_position(BTC)
    assert (pos["side"], pos["contracts"], pos["entryPrice"]) == ("long", 0.01, 99000)
    expected = (
        D(10000)
        - fee(D("2000"), D("0.00055"))
        + D("20")  # 0.02 x (100000 - 99000) on the short
        - fee(D("2970"), D("0.00055"))
    )
    assert wallet(emu) == expected


# ---- conditional orders -----------------------------------------------------------------------


def stop_order(ex: ccxt.bybit, side: str, trigger: float, by: str, **extra: Any) -> str:
    params = {"stopLossPrice": trigger, "reduceOnly": True, "triggerBy": by, **extra}
    return ex.create_order(BTC, "market", side, 0.01, None, params)["id"]


def test_stop_falls_to_its_mark_trigger_and_fills_at_last(emu: Emulator, ex: ccxt.bybit) -> None:
    ex.create_order(BTC, "market", "buy", 0.01)
    stop_id = stop_order(ex, "sell", 99000, "MarkPrice")  # long stop: triggerDirection 2
    waiting = order(ex, stop_id)
    assert waiting["status"] == "open" and waiting["info"]["orderStatus"] == "Untriggered"
    assert (waiting["stopPrice"], waiting["info"]["stopOrderType"]) == (99000, "Stop")
    assert waiting["info"]["triggerDirection"] == 2 and waiting["reduceOnly"] is True
    emu.set_price("BTCUSDT", "98900", mark="99100")  # last below, mark not: no trigger
    assert order(ex, stop_id)["info"]["orderStatus"] == "Untriggered"
    emu.set_price("BTCUSDT", "98800", mark="98950")
    done = order(ex, stop_id)
    assert done["status"] == "closed" and done["info"]["orderStatus"] == "Filled"
    assert (done["average"], done["filled"], done["triggerPrice"]) == (98800, 0.01, 99000)
    assert done["fee"]["cost"] == float(fee(D("988"), D("0.00055")))
    assert position(emu)["size"] == "0.000"


def test_stop_rises_to_its_last_price_trigger(emu: Emulator, ex: ccxt.bybit) -> None:
    ex.create_order(BTC, "market", "sell", 0.01)
    stop_id = stop_order(ex, "buy", 101000, "LastPrice")  # short stop: triggerDirection 1
    assert order(ex, stop_id)["info"]["triggerDirection"] == 1
    emu.set_price("BTCUSDT", "100900", mark="101500")  # the mark is not what it watches
    assert order(ex, stop_id)["info"]["orderStatus"] == "Untriggered"
    emu.set_price("BTCUSDT", "101000")
    done = order(ex, stop_id)
    assert (done["status"], done["average"]) == ("closed", 101000)


def test_index_price_trigger_and_direction_checks(emu: Emulator, ex: ccxt.bybit) -> None:
    ex.create_order(BTC, "market", "buy", 0.01)
    with pytest.raises(ccxt.InvalidOrder, match="110093"):  # falling, but above the price
        stop_order(ex, "sell", 100500, "LastPrice")
    with pytest.raises(ccxt.InvalidOrder, match="110092"):  # rising, but below the price
        ex.create_order(
            BTC, "market", "buy", 0.01, None,
            {"triggerPrice": 99000, "triggerDirection": "ascending"},
        )  # fmt: skip
    stop_id = stop_order(ex, "sell", 99500, "IndexPrice")
    emu.set_price("BTCUSDT", "99000", mark="99000", index="99600")
    assert order(ex, stop_id)["info"]["orderStatus"] == "Untriggered"
    emu.set_price("BTCUSDT", "99400", mark="99600", index="99400")
    assert order(ex, stop_id)["info"]["orderStatus"] == "Filled"


def test_conditional_limit_rests_after_its_trigger(emu: Emulator, ex: ccxt.bybit) -> None:
    placed = ex.create_order(
        BTC, "limit", "buy", 0.01, 100400, {"triggerPrice": 100500, "triggerDirection": "above"}
    )
    emu.set_price("BTCUSDT", "100500")  # triggers; the limit is below the ask: rests
    resting = order(ex, placed["id"])
    assert resting["status"] == "open" and resting["info"]["orderStatus"] == "New"
    emu.set_price("BTCUSDT", "100400")
    filled = order(ex, placed["id"])
    assert (filled["status"], filled["average"]) == ("closed", 100400)
    assert ex.fetch_my_trades(BTC)[-1]["takerOrMaker"] == "maker"


def test_reduce_only_stop_without_a_position_cancels_on_trigger(
    emu: Emulator, ex: ccxt.bybit
) -> None:
    ex.create_order(BTC, "market", "buy", 0.01)
    stop_id = stop_order(ex, "sell", 99000, "LastPrice")
    ex.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})
    emu.set_price("BTCUSDT", "98000")
    gone = order(ex, stop_id)
    assert gone["status"] == "canceled" and gone["filled"] == 0
    assert position(emu)["size"] == "0.000"


# ---- amend and cancel -------------------------------------------------------------------------


def test_amend_price_qty_and_trigger(emu: Emulator, ex: ccxt.bybit) -> None:
    placed = ex.create_order(BTC, "limit", "buy", 0.01, 99000)
    ex.edit_order(placed["id"], BTC, "limit", "buy", 0.02, 99100)
    amended = order(ex, placed["id"])
    assert (amended["amount"], amended["price"], amended["status"]) == (0.02, 99100, "open")
    with pytest.raises(ccxt.BadRequest):  # nothing changes
        ex.edit_order(placed["id"], BTC, "limit", "buy", 0.02, 99100)
    ex.edit_order(placed["id"], BTC, "limit", "buy", None, 100100)  # now crosses: taker fill
    assert order(ex, placed["id"])["average"] == 100000
    with pytest.raises(ccxt.OrderNotFound):
        ex.edit_order(placed["id"], BTC, "limit", "buy", None, 99000)

    stop_id = stop_order(ex, "sell", 98000, "MarkPrice")
    ex.edit_order(
        stop_id,
        BTC,
        "market",
        "sell",
        None,
        None,
        {"triggerPrice": 99500, "triggerBy": "MarkPrice"},
    )
    assert order(ex, stop_id)["triggerPrice"] == 99500
    with pytest.raises(ccxt.InvalidOrder, match="110093"):
        ex.edit_order(
            stop_id,
            BTC,
            "market",
            "sell",
            None,
            None,
            {"triggerPrice": 100500, "triggerBy": "MarkPrice"},
        )


def test_cancel_cancel_all_and_history(emu: Emulator, ex: ccxt.bybit) -> None:
    resting = ex.create_order(BTC, "limit", "buy", 0.01, 99000)
    ex.cancel_order(resting["id"], BTC)
    assert order(ex, resting["id"])["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(resting["id"], BTC)
    ex.create_order(BTC, "market", "buy", 0.01)
    stop_id = stop_order(ex, "sell", 99000, "LastPrice")
    ex.cancel_order(stop_id, BTC)
    cancelled_stop = order(ex, stop_id)
    assert cancelled_stop["status"] == "canceled"
    assert cancelled_stop["info"]["orderStatus"] == "Deactivated"  # Bybit's word for a stop
    ids = [ex.create_order(BTC, "limit", "buy", 0.01, p)["id"] for p in (98000, 97000)]
    ids.append(stop_order(ex, "sell", 95000, "LastPrice"))
    ex.cancel_all_orders(BTC)
    assert ex.fetch_open_orders(BTC) == []
    assert {o["id"] for o in ex.fetch_canceled_orders(BTC)} >= {resting["id"], *ids[:2]}
    history = ex.privateGetV5OrderHistory({"category": "linear", "symbol": "BTCUSDT"})
    assert len(history["result"]["list"]) == 6


# ---- money --------------------------------------------------------------------------------------


def test_fees_realised_pnl_and_wallet_arithmetic(emu: Emulator, ex: ccxt.bybit) -> None:
    ex.set_leverage(2, BTC)
    entry = ex.create_order(BTC, "limit", "buy", 0.05, 99000)
    emu.set_price("BTCUSDT", "99000")  # maker fill at 99000
    open_fee = fee(D("4950"), D("0.0002"))
    assert wallet(emu) == D(10000) - open_fee
    emu.set_price("BTCUSDT", "101000", mark="100990")
    pos = ex.fetch_position(BTC)
    assert pos["unrealizedPnl"] == pytest.approx(0.05 * 1990)
    assert pos["initialMargin"] == pytest.approx(4950 / 2)
    balance = ex.fetch_balance()["USDT"]
    assert balance["total"] == float(wallet(emu))  # wallet balance, without unrealised PnL
    assert balance["free"] == pytest.approx(float(wallet(emu)) - 4950 / 2)
    exit_ = ex.create_order(BTC, "market", "sell", 0.05, None, {"reduceOnly": True})
    close_fee = fee(D("5050"), D("0.00055"))
    expected = D(10000) - open_fee + D("100") - close_fee  # 0.05 x 2000
    assert wallet(emu) == expected
    assert ex.fetch_balance()["USDT"]["total"] == float(expected)
    assert D(position(emu)["cumRealisedPnl"]) == expected - 10000
    closed = ex.privateGetV5PositionClosedPnl({"category": "linear", "symbol": "BTCUSDT"})
    row = closed["result"]["list"][0]
    assert D(row["closedPnl"]) == D("100") - open_fee - close_fee
    assert (row["avgEntryPrice"], row["avgExitPrice"], row["orderId"]) == (
        "99000",
        "101000",
        exit_["id"],
    )
    trades = ex.fetch_my_trades(BTC)
    assert [t["order"] for t in trades] == [entry["id"], exit_["id"]]
    assert sum(t["fee"]["cost"] for t in trades) == pytest.approx(float(open_fee + close_fee))
    log = ex.privateGetV5AccountTransactionLog({"accountType": "UNIFIED"})["result"]["list"]
    assert D(log[0]["cashBalance"]) == expected


def test_freqtrade_style_positions_and_order_lookups(emu: Emulator, ex: ccxt.bybit) -> None:
    ex.set_margin_mode("isolated", BTC, {"leverage": 3})
    ex.set_leverage(3, BTC)
    ex.create_order(BTC, "limit", "sell", 0.03, 100000.1, {"position_idx": 0})  # short at ask
    emu.set_price("BTCUSDT", "100000.1")
    (pos,) = ex.fetch_positions()
    assert (pos["symbol"], pos["side"], pos["contracts"], pos["leverage"]) == (
        BTC,
        "short",
        0.03,
        3,
    )
    assert pos["liquidationPrice"] > 100000.1 and pos["collateral"] > 0
    assert ex.fetch_positions([ETH])[0]["contracts"] == 0  # a symbol: its (empty) row
    emu.set_price("BTCUSDT", "100000")
    ex.create_order(
        BTC, "market", "buy", 0.03, None,
        {"stopLossPrice": 102000, "reduceOnly": True, "triggerBy": "MarkPrice",
         "method": "privatePostV5OrderCreate", "position_idx": 0},
    )  # fmt: skip
    (stop,) = ex.fetch_open_orders(BTC)
    assert (stop["stopLossPrice"], stop["reduceOnly"], stop["side"]) == (102000, True, "buy")
    assert ex.fetch_open_order(stop["id"], BTC)["id"] == stop["id"]


# ---- the price feed and the background tick -----------------------------------------------------


def test_feed_prices_and_a_stop_fired_by_the_background_tick(tmp_path: Path) -> None:
    source = CandleSource.historical(DATA_DIR)
    # The finest candles (1m) set the live price: the forming one is served whole.
    series = source.klines("BTC", "1", limit=1000)  # newest first
    # Two moments of the sample: a price, then a later one clearly above it.
    later = series[0]
    earlier = next(c for c in series[200:] if c.close < later.close * 0.99)
    clock = [earlier.start_ms / 1000 + 1]
    feed = CandleSource(DATA_DIR, clock=lambda: clock[0])
    with start(tmp_path, candles=feed, tick_s=0.05) as emu:
        ex = make_client(emu.url)
        price = D(repr(earlier.close)).quantize(D("0.1"))
        assert emu.prices("BTCUSDT").last == price
        ex.create_order(BTC, "market", "sell", 0.01)
        assert ex.fetch_my_trades(BTC)[-1]["price"] == float(price)
        trigger = float((price * D("1.005")).quantize(D("0.1")))
        stop_id = stop_order(ex, "buy", trigger, "LastPrice")
        requests = emu.total_requests
        clock[0] = later.start_ms / 1000 + 1  # the feed moves; no client talks

        def filled() -> bool:
            orders = emu.state()["accounts"]["unit"]["orders"]
            return any(o["orderId"] == stop_id and o["orderStatus"] == "Filled" for o in orders)

        wait_until(filled, 5, "the background tick to fire the stop")
        assert emu.total_requests == requests
        assert ex.fetch_my_trades(BTC)[-1]["price"] == float(
            D(repr(later.close)).quantize(D("0.1"))
        )


# ---- the log and the control endpoint ----------------------------------------------------------


def test_log_redacts_the_key_and_never_holds_secret_or_signature(
    emu: Emulator, ex: ccxt.bybit, tmp_path: Path
) -> None:
    ex.create_order(BTC, "limit", "buy", 0.01, 99000)
    ex.fetch_balance()
    make_client(emu.url, secret="wrong-secret-0000").fetch_time()
    private = [r for r in emu.requests if r.get("account")]
    assert private and {r["api_key"] for r in private} == {"un***"}
    creates = [r for r in private if r["path"] == "/v5/order/create"]
    assert creates[0]["body"]["price"] == "99000"  # the body may be logged
    text = (tmp_path / "emulator.jsonl").read_text()
    assert KEY not in text and SECRET not in text and "X-BAPI-SIGN" not in text
    assert "sign" not in json.dumps(emu.requests).lower().replace("design", "")
    assert len(text.splitlines()) == emu.total_requests


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return json.loads(response.read())


def test_control_endpoint_is_off_unless_asked_for(tmp_path: Path) -> None:
    with start(tmp_path, test_control=False) as emu:
        answer = post(f"{emu.url}/_control/price", {"symbol": "BTCUSDT", "price": "1"})
        assert answer["retCode"] == 10404
        assert [r["path"] for r in emu.unexpected_requests()] == ["/_control/price"]
        assert emu.prices("BTCUSDT") is None
    with start(tmp_path, test_control=True) as emu:
        answer = post(f"{emu.url}/_control/price", {"symbol": "BTCUSDT", "price": "123.4"})
        assert answer["result"]["override"]["last"] == "123.40"
        assert emu.prices("BTCUSDT").mark == D("123.4")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{emu.url}/_control/state", timeout=10) as response:
            state_ = json.loads(response.read())["result"]
        assert state_["overrides"]["BTCUSDT"]["last"] == "123.40"
        assert list(state_["accounts"]) == ["unit"]  # named by label, never by key
        post(f"{emu.url}/_control/price", {"symbol": "BTCUSDT", "price": None})
        assert emu.prices("BTCUSDT") is None
        assert emu.unexpected_requests() == []


def test_timestamps_are_wall_clock_milliseconds(emu: Emulator, ex: ccxt.bybit) -> None:
    before = int(time.time() * 1000)
    placed = ex.create_order(BTC, "market", "buy", 0.01)
    got = order(ex, placed["id"])
    assert before <= got["timestamp"] <= int(time.time() * 1000)
    assert got["lastTradeTimestamp"] >= got["timestamp"]
