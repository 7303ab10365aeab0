"""Pinned Bybit v5 instrument info for the nine linear USDT perpetuals the project trades.

The rows have the shape of `/v5/market/instruments-info?category=linear` list entries, with numbers
as strings, exactly as Bybit sends them and as ccxt's `fetch_future_markets` parses them.
"""

from __future__ import annotations

import copy
from typing import Any

# PINNED ON PURPOSE. These values never follow the live exchange: a backtest run today and one run
# in five years must see the same precision, limits and leverage, or their results differ for
# reasons that have nothing to do with the strategy. Change them only deliberately, in one commit,
# and say why.
#
# Where they come from (recorded by hand in 2025 for the June 2025 sample window):
# - tickSize and qtyStep/minOrderQty are Bybit's published linear filters. For the seven pairs with
#   sample candles they were checked against the data itself: every price in
#   shared/data/bybit/futures/*-3m-futures.feather lies on the tick grid and every volume on the
#   qty grid (BTC 0.10/0.001, ETH 0.01/0.01, SOL 0.010/0.1, BNB 0.10/0.01, ADA 0.0001/1,
#   DOGE 0.00001/1, DOT 0.0001/0.1). WIF and XRP have no sample candles; theirs are Bybit's
#   published values as best known.
# - minNotionalValue is 5 USDT, Bybit's floor for USDT perpetuals.
# - leverageFilter.maxLeverage equals tier 1 of bybit_emulator/data/leverage_tiers_2024-08.json
#   (real Bybit risk-limit tiers), so markets and tiers never disagree.
# - maxOrderQty, maxMktOrderQty, postOnlyMaxOrderQty, maxPrice and launchTime are approximate
#   Bybit values; Freqtrade does not use them for sizing these pairs at the project's stakes.

TRADING = "Trading"


def _row(
    base: str,
    *,
    price_scale: int,
    tick: str,
    min_price: str,
    max_price: str,
    qty_step: str,
    max_qty: str,
    max_mkt_qty: str,
    max_leverage: str,
    launch_time: str,
) -> dict[str, Any]:
    return {
        "symbol": f"{base}USDT",
        "contractType": "LinearPerpetual",
        "status": TRADING,
        "baseCoin": base,
        "quoteCoin": "USDT",
        "launchTime": launch_time,
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": str(price_scale),
        "leverageFilter": {
            "minLeverage": "1",
            "maxLeverage": max_leverage,
            "leverageStep": "0.01",
        },
        "priceFilter": {"minPrice": min_price, "maxPrice": max_price, "tickSize": tick},
        "lotSizeFilter": {
            "maxOrderQty": max_qty,
            "minOrderQty": qty_step,
            "qtyStep": qty_step,
            "postOnlyMaxOrderQty": max_qty,
            "maxMktOrderQty": max_mkt_qty,
            "minNotionalValue": "5",
        },
        "unifiedMarginTrade": True,
        "fundingInterval": 480,
        "settleCoin": "USDT",
        "copyTrading": "both",
        "isPreListing": False,
        "preListingInfo": None,
    }


_INSTRUMENTS: tuple[dict[str, Any], ...] = (
    _row(
        "BTC",
        price_scale=2,
        tick="0.10",
        min_price="0.10",
        max_price="1999999.80",
        qty_step="0.001",
        max_qty="1190.000",
        max_mkt_qty="119.000",
        max_leverage="100.00",
        launch_time="1585526400000",
    ),
    _row(
        "ETH",
        price_scale=2,
        tick="0.01",
        min_price="0.01",
        max_price="199999.98",
        qty_step="0.01",
        max_qty="7240.00",
        max_mkt_qty="724.00",
        max_leverage="100.00",
        launch_time="1615766400000",
    ),
    _row(
        "SOL",
        price_scale=3,
        tick="0.010",
        min_price="0.010",
        max_price="19999.980",
        qty_step="0.1",
        max_qty="79770.0",
        max_mkt_qty="7977.0",
        max_leverage="75.00",
        launch_time="1634256000000",
    ),
    _row(
        "BNB",
        price_scale=2,
        tick="0.10",
        min_price="0.10",
        max_price="199999.80",
        qty_step="0.01",
        max_qty="3600.00",
        max_mkt_qty="360.00",
        max_leverage="50.00",
        launch_time="1634515200000",
    ),
    _row(
        "ADA",
        price_scale=4,
        tick="0.0001",
        min_price="0.0001",
        max_price="199.9998",
        qty_step="1",
        max_qty="4000000",
        max_mkt_qty="400000",
        max_leverage="75.00",
        launch_time="1630022400000",
    ),
    _row(
        "DOGE",
        price_scale=5,
        tick="0.00001",
        min_price="0.00001",
        max_price="199.99998",
        qty_step="1",
        max_qty="15000000",
        max_mkt_qty="1500000",
        max_leverage="75.00",
        launch_time="1620777600000",
    ),
    _row(
        "DOT",
        price_scale=4,
        tick="0.0001",
        min_price="0.0001",
        max_price="1999.9998",
        qty_step="0.1",
        max_qty="200000.0",
        max_mkt_qty="20000.0",
        max_leverage="50.00",
        launch_time="1615766400000",
    ),
    _row(
        "WIF",
        price_scale=4,
        tick="0.0001",
        min_price="0.0001",
        max_price="199.9998",
        qty_step="1",
        max_qty="1500000",
        max_mkt_qty="150000",
        max_leverage="25.00",
        launch_time="1704931200000",
    ),
    _row(
        "XRP",
        price_scale=4,
        tick="0.0001",
        min_price="0.0001",
        max_price="199.9998",
        qty_step="1",
        max_qty="5000000",
        max_mkt_qty="500000",
        max_leverage="75.00",
        launch_time="1615766400000",
    ),
)

SYMBOLS: tuple[str, ...] = tuple(row["symbol"] for row in _INSTRUMENTS)
_BY_SYMBOL: dict[str, dict[str, Any]] = {row["symbol"]: row for row in _INSTRUMENTS}


def linear_instruments() -> list[dict[str, Any]]:
    """All pinned rows, in Bybit's order; deep copies so callers cannot alter the pins."""
    return copy.deepcopy(list(_INSTRUMENTS))


def instrument(symbol: str) -> dict[str, Any] | None:
    """The pinned row for a Bybit symbol id such as `BTCUSDT`, or None."""
    row = _BY_SYMBOL.get(symbol)
    return copy.deepcopy(row) if row is not None else None


def base_coin(symbol: str) -> str | None:
    """`BTCUSDT` -> `BTC` (the prefix of Freqtrade's data file names)."""
    row = _BY_SYMBOL.get(symbol)
    return row["baseCoin"] if row is not None else None


def decimals(step: str) -> int:
    """Number of decimals of a Bybit step string: `0.010` -> 3, `1` -> 0."""
    return len(step.split(".", 1)[1]) if "." in step else 0
