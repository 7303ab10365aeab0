"""Accounts, orders, one-way positions and a matching engine behind Bybit v5's private REST.

Prices come from a function (the emulator's candle feed, or a test's override): `last`, `mark`
and `index` per symbol. The book is one tick wide: bid = last, ask = last + tick, as the public
ticker and order book show it. Depth is unlimited: an order never fills partially.

- A market order fills at once as taker at last +/- `slippage_bps` (rounded to the tick, against
  the taker).
- A limit order that crosses the book (buy >= ask, sell <= bid) fills at once as taker at the
  market price above, never worse than its limit. Otherwise it rests (IOC/FOK: cancelled;
  PostOnly that would cross: accepted, then cancelled with rejectReason
  EC_PostOnlyWillTakeLiquidity, as Bybit does) and fills later as maker at its own price once
  the last price touches it (buy: last <= price, sell: last >= price).
- A conditional order (triggerPrice + triggerDirection 1 = rises to, 2 = falls to) waits as
  Untriggered until its trigger price (triggerBy LastPrice, MarkPrice or IndexPrice) reaches the
  trigger, then becomes the market or limit order above, with the same orderId.
- reduceOnly never increases a position: the fill is capped at the position, and a reduce-only
  order with nothing left to reduce is cancelled (cancelType CancelByReduceOnly).

Fees are charged at the account's maker/taker rate on every fill (8 decimals, half up); realised
PnL and fees go to the USDT wallet at once, like Bybit's unified account. Margin: position IM =
value / leverage, order IM = open limit orders' value / leverage; a new order must fit into the
wallet minus both (retCode 110007). Not modelled: liquidation, funding payments, risk-limit caps
on position size, hedge mode, spot and options.

Matching runs whenever `match()` is called: the HTTP server calls it before every request and
from a background tick, so a resting stop fires while no client is talking.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, NamedTuple

from .accounts import AccountConfig
from .errors import (
    DUPLICATE_LINK_ID,
    EXPECT_FALLING,
    EXPECT_RISING,
    INSUFFICIENT_BALANCE,
    LEVERAGE_NOT_MODIFIED,
    MARGIN_MODE_NOT_MODIFIED,
    MIN_NOTIONAL,
    ORDER_NOT_FOUND,
    PARAM_ERROR,
    POSITION_MODE_HAS_ORDERS,
    POSITION_MODE_HAS_POSITION,
    REDUCE_ONLY_RULE,
    RISK_LIMIT_LEVERAGE,
    UTA_FORBIDDEN,
    ApiError,
)
from .instruments import instrument, linear_instruments
from .risk_limits import RiskLimitTable

ZERO = Decimal(0)
ONE = Decimal(1)
MONEY = Decimal("1e-8")
SETTLE = "USDT"
DEFAULT_LEVERAGE = Decimal(10)  # what Bybit shows for a symbol never traded
OPEN = frozenset({"New", "PartiallyFilled", "Untriggered"})
TRIGGER_TYPES = ("LastPrice", "MarkPrice", "IndexPrice")
TIME_IN_FORCE = ("GTC", "IOC", "FOK", "PostOnly")
SEVEN_DAYS_MS = 7 * 86_400_000
MARGIN_MODES = ("ISOLATED_MARGIN", "REGULAR_MARGIN", "PORTFOLIO_MARGIN")


class Prices(NamedTuple):
    last: Decimal
    mark: Decimal
    index: Decimal


PriceSource = Callable[[str], Prices | None]


def num(value: Decimal, places: Decimal | None = None) -> str:
    """Bybit's number text: plain decimal, no exponent, no trailing zeros (unless `places`)."""
    if places is not None:
        return format(value.quantize(places, rounding=ROUND_HALF_UP), "f")
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def money(value: Decimal) -> str:
    return num(value.quantize(MONEY, rounding=ROUND_HALF_UP))


def _to_tick(value: Decimal, tick: Decimal, rounding: str = ROUND_HALF_UP) -> Decimal:
    return (value / tick).to_integral_value(rounding=rounding) * tick


# ---- request parameters ---------------------------------------------------------------------


def _text(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decimal(params: dict[str, Any], name: str, *, required: bool = False) -> Decimal | None:
    text = _text(params, name)
    if text is None:
        if required:
            raise ApiError(PARAM_ERROR, f"params error: {name} is required")
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ApiError(PARAM_ERROR, f"params error: {name} invalid") from None
    if not value.is_finite():
        raise ApiError(PARAM_ERROR, f"params error: {name} invalid")
    return value


def _flag(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("true", "1") if value is not None else False


def _integer(params: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    text = _text(params, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(PARAM_ERROR, f"params error: {name} invalid") from None
    if not lo <= value <= hi:
        raise ApiError(PARAM_ERROR, f"params error: {name} must be in [{lo}, {hi}]")
    return value


def _linear(params: dict[str, Any]) -> None:
    category = _text(params, "category")
    if category != "linear":
        raise ApiError(PARAM_ERROR, f"Illegal category: {category!r} (the emulator is linear only)")


def _symbol(params: dict[str, Any], *, required: bool = True) -> str | None:
    symbol = _text(params, "symbol")
    if symbol is None:
        if required:
            raise ApiError(PARAM_ERROR, "params error: symbol is required")
        return None
    if instrument(symbol) is None:
        raise ApiError(PARAM_ERROR, f"Not supported symbols: {symbol}")
    return symbol


def _page(
    rows: list[dict[str, Any]], params: dict[str, Any], default: int, most: int
) -> tuple[list[dict[str, Any]], str]:
    limit = _integer(params, "limit", default, 1, most)
    cursor = _integer(params, "cursor", 0, 0, 10**9)
    page = rows[cursor : cursor + limit]
    return page, str(cursor + limit) if cursor + limit < len(rows) else ""


def _window(params: dict[str, Any], now_ms: int) -> tuple[int, int]:
    """[startTime, endTime] as Bybit's list endpoints read them: 7 days at most, default last 7."""
    start = _decimal(params, "startTime")
    end = _decimal(params, "endTime")
    if start is None and end is None:
        return now_ms - SEVEN_DAYS_MS, now_ms + 1
    if start is None:
        assert end is not None
        return int(end) - SEVEN_DAYS_MS, int(end)
    if end is None:
        return int(start), int(start) + SEVEN_DAYS_MS
    if end < start:
        raise ApiError(PARAM_ERROR, "params error: startTime is after endTime")
    if end - start > SEVEN_DAYS_MS:
        raise ApiError(PARAM_ERROR, "The time range can't exceed 7 days")
    return int(start), int(end)


# ---- state ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Market:
    symbol: str
    base: str
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    max_market_qty: Decimal
    min_notional: Decimal
    max_leverage: Decimal

    @classmethod
    def of(cls, symbol: str) -> Market:
        row = instrument(symbol)
        if row is None:
            raise ApiError(PARAM_ERROR, f"Not supported symbols: {symbol}")
        lot, price = row["lotSizeFilter"], row["priceFilter"]
        return cls(
            symbol=symbol,
            base=row["baseCoin"],
            tick=Decimal(price["tickSize"]),
            step=Decimal(lot["qtyStep"]),
            min_qty=Decimal(lot["minOrderQty"]),
            max_qty=Decimal(lot["maxOrderQty"]),
            max_market_qty=Decimal(lot["maxMktOrderQty"]),
            min_notional=Decimal(lot["minNotionalValue"]),
            max_leverage=Decimal(row["leverageFilter"]["maxLeverage"]),
        )


@dataclass
class Order:
    order_id: str
    link_id: str
    symbol: str
    side: str  # "Buy" | "Sell"
    order_type: str  # "Market" | "Limit"
    qty: Decimal
    price: Decimal | None
    time_in_force: str
    reduce_only: bool
    close_on_trigger: bool
    trigger_price: Decimal | None
    trigger_direction: int
    trigger_by: str
    status: str
    created_ms: int
    updated_ms: int
    last_price_on_created: Decimal
    create_type: str = "CreateByUser"
    cancel_type: str = "UNKNOWN"
    reject_reason: str = "EC_NoError"
    cum_qty: Decimal = ZERO
    cum_value: Decimal = ZERO
    cum_fee: Decimal = ZERO
    triggered: bool = False

    @property
    def conditional(self) -> bool:
        return self.trigger_price is not None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    @property
    def leaves(self) -> Decimal:
        return self.qty - self.cum_qty if self.is_open else ZERO

    @property
    def sign(self) -> int:
        return 1 if self.side == "Buy" else -1


@dataclass
class Position:
    symbol: str
    leverage: Decimal = DEFAULT_LEVERAGE
    size: Decimal = ZERO  # signed: > 0 long, < 0 short
    avg: Decimal = ZERO
    trade_mode: int = 0  # classic accounts: 0 cross, 1 isolated
    cum_realised: Decimal = ZERO
    cur_realised: Decimal = ZERO
    open_fee: Decimal = ZERO  # fees paid for the size still open (closed-pnl bookkeeping)
    created_ms: int = 0
    updated_ms: int = 0
    seq: int = 0


@dataclass
class AccountState:
    config: AccountConfig
    user_id: int
    created_ms: int
    wallet: Decimal
    margin_mode: str = "REGULAR_MARGIN"
    position_mode: int = 0  # 0 one-way (the only mode supported), 3 hedge
    cum_realised: Decimal = ZERO
    updated_ms: int = 0
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    executions: list[dict[str, Any]] = field(default_factory=list)
    closed_pnl: list[dict[str, Any]] = field(default_factory=list)
    transactions: list[dict[str, Any]] = field(default_factory=list)

    def position(self, symbol: str) -> Position:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol)
        return pos

    def open_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if o.is_open]


class TradingEngine:
    """Every account's state; all methods are thread-safe (one lock)."""

    def __init__(
        self,
        accounts: Iterable[AccountConfig],
        prices: PriceSource,
        risk_limits: RiskLimitTable,
        *,
        slippage_bps: Decimal = ZERO,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._prices = prices
        self._risk = risk_limits
        self.slippage = Decimal(slippage_bps) / 10_000
        self._clock = clock
        self._lock = threading.RLock()
        self._seq = itertools.count(1)
        now = self.now_ms()
        self._accounts: dict[str, AccountState] = {}
        for i, config in enumerate(accounts):
            self._accounts[config.key] = AccountState(
                config=config, user_id=1_000_001 + i, created_ms=now, wallet=config.balance
            )
        self._markets: dict[str, Market] = {}

    # ---- helpers ---------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def account(self, key: str) -> AccountState:
        return self._accounts[key]

    @property
    def accounts(self) -> list[AccountState]:
        return list(self._accounts.values())

    def market(self, symbol: str) -> Market:
        found = self._markets.get(symbol)
        if found is None:
            found = self._markets[symbol] = Market.of(symbol)
        return found

    def prices(self, symbol: str) -> Prices | None:
        return self._prices(symbol)

    def _require_prices(self, symbol: str) -> Prices:
        found = self._prices(symbol)
        if found is None:
            raise ApiError(PARAM_ERROR, f"no market price for {symbol} (no candles, no override)")
        return found

    def _tier(self, symbol: str, value: Decimal) -> dict[str, Any] | None:
        rows = self._risk.rows(symbol)
        for row in rows:
            if value <= Decimal(row["riskLimitValue"]):
                return row
        return rows[-1] if rows else None

    def max_leverage(self, symbol: str, value: Decimal = ZERO) -> Decimal:
        """The highest leverage the risk-limit tier holding a position of `value` allows."""
        row = self._tier(symbol, value)
        return Decimal(row["maxLeverage"]) if row else self.market(symbol).max_leverage

    def _mmr(self, symbol: str, value: Decimal) -> Decimal:
        row = self._tier(symbol, value)
        return Decimal(row["maintenanceMargin"]) if row else Decimal("0.005")

    def _taker_price(self, market: Market, prices: Prices, side: str) -> Decimal:
        if side == "Buy":
            return _to_tick(prices.last * (ONE + self.slippage), market.tick, ROUND_CEILING)
        return _to_tick(prices.last * (ONE - self.slippage), market.tick, ROUND_FLOOR)

    def _book(self, market: Market, prices: Prices) -> tuple[Decimal, Decimal]:
        bid = _to_tick(prices.last, market.tick)
        return bid, bid + market.tick

    @staticmethod
    def _reducible(pos: Position, side: str) -> Decimal:
        """How much an order of `side` can reduce the position (0 if it would increase it)."""
        if side == "Sell" and pos.size > 0:
            return pos.size
        if side == "Buy" and pos.size < 0:
            return -pos.size
        return ZERO

    def _position_im(self, acct: AccountState) -> Decimal:
        return sum(
            (abs(p.size) * p.avg / p.leverage for p in acct.positions.values() if p.size),
            ZERO,
        )

    def _order_im(self, acct: AccountState) -> Decimal:
        total = ZERO
        for order in acct.open_orders():
            if order.reduce_only or order.status == "Untriggered" or order.price is None:
                continue
            total += order.leaves * order.price / acct.position(order.symbol).leverage
        return total

    def _available(self, acct: AccountState) -> Decimal:
        return acct.wallet - self._position_im(acct) - self._order_im(acct)

    def _check_margin(self, acct: AccountState, order: Order, price: Decimal) -> None:
        """An order that opens or adds to a position needs IM plus the opening fee."""
        if order.reduce_only:
            return
        pos = acct.position(order.symbol)
        opening = order.leaves - self._reducible(pos, order.side)
        if opening <= 0:
            return
        value = opening * price
        needed = value / pos.leverage + value * acct.config.taker_fee
        if needed > self._available(acct):
            raise ApiError(INSUFFICIENT_BALANCE, "ab not enough for new order")

    def _order(self, acct: AccountState, params: dict[str, Any]) -> Order:
        order_id = _text(params, "orderId")
        link_id = _text(params, "orderLinkId")
        if order_id is None and link_id is None:
            raise ApiError(PARAM_ERROR, "params error: orderId or orderLinkId is required")
        for order in acct.orders.values():
            if (order_id is None or order.order_id == order_id) and (
                link_id is None or order.link_id == link_id
            ):
                return order
        raise ApiError(ORDER_NOT_FOUND, "Order does not exist.")

    # ---- account endpoints -----------------------------------------------------------------

    def query_api(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(acct.user_id),
            "note": acct.config.label,
            "apiKey": acct.config.key,
            "readOnly": 0,
            "secret": "",
            "permissions": {
                "ContractTrade": ["Order", "Position"],
                "Spot": [],
                "Wallet": ["AccountTransfer"],
                "Options": [],
                "Derivatives": [],
                "CopyTrading": [],
                "BlockTrade": [],
                "Exchange": [],
                "NFT": [],
                "Affiliate": [],
                "Earn": [],
            },
            "ips": ["*"],
            "type": 1,
            "deadlineDay": 90,
            "expiredAt": "",
            "createdAt": "2025-06-01T00:00:00Z",
            "unified": 0,
            "uta": 1 if acct.config.unified else 0,
            "userID": acct.user_id,
            "inviterID": 0,
            "vipLevel": "No VIP",
            "mktMakerLevel": "0",
            "affiliateID": 0,
            "rsaPublicKey": "",
            "isMaster": False,
            "parentUid": "0",
            "kycLevel": "LEVEL_DEFAULT",
            "kycRegion": "",
        }

    def account_info(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "unifiedMarginStatus": 6 if acct.config.unified else 1,
            "marginMode": acct.margin_mode,
            "isMasterTrader": False,
            "spotHedgingStatus": "OFF",
            "updatedTime": str(acct.updated_ms or acct.created_ms),
            "dcpStatus": "OFF",
            "timeWindow": 10,
            "smpGroup": 0,
        }

    def coin_info(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        coins = [SETTLE] + sorted({row["baseCoin"] for row in linear_instruments()})
        wanted = _text(params, "coin")
        return {
            "rows": [
                {"name": coin, "coin": coin, "remainAmount": "0", "chains": []}
                for coin in coins
                if wanted in (None, coin)
            ]
        }

    def fee_rate(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        category = _text(params, "category") or "linear"
        if category != "linear":
            return {"list": []}
        symbol = _symbol(params, required=False)
        base = _text(params, "baseCoin")
        return {
            "list": [
                {
                    "symbol": row["symbol"],
                    "baseCoin": "",
                    "takerFeeRate": num(acct.config.taker_fee),
                    "makerFeeRate": num(acct.config.maker_fee),
                }
                for row in linear_instruments()
                if symbol in (None, row["symbol"]) and base in (None, row["baseCoin"])
            ]
        }

    def wallet_balance(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            wanted = "UNIFIED" if acct.config.unified else "CONTRACT"
            if _text(params, "accountType") != wanted:
                raise ApiError(PARAM_ERROR, f"accountType only support {wanted} for this account")
            coin = _text(params, "coin")
            position_im = self._position_im(acct)
            order_im = self._order_im(acct)
            upnl = ZERO
            mm = ZERO
            for pos in acct.positions.values():
                if pos.size:
                    prices = self._prices(pos.symbol)
                    mark = prices.mark if prices else pos.avg
                    upnl += (mark - pos.avg) * pos.size
                    value = abs(pos.size) * pos.avg
                    mm += value * self._mmr(pos.symbol, value)
            equity = acct.wallet + upnl
            available = max(acct.wallet - position_im - order_im, ZERO)
            entry = {
                "coin": SETTLE,
                "equity": money(equity),
                "usdValue": money(equity),
                "walletBalance": money(acct.wallet),
                "free": "",
                "locked": "0",
                "spotHedgingQty": "0",
                "borrowAmount": "0",
                "availableToBorrow": "",
                # Deprecated (empty) for unified accounts since 2025; ccxt then derives free
                # from walletBalance - locked - totalPositionIM - totalOrderIM.
                "availableToWithdraw": "" if acct.config.unified else money(available),
                "accruedInterest": "0",
                "totalOrderIM": money(order_im),
                "totalPositionIM": money(position_im),
                "totalPositionMM": money(mm),
                "unrealisedPnl": money(upnl),
                "cumRealisedPnl": money(acct.cum_realised),
                "bonus": "0",
                "marginCollateral": True,
                "collateralSwitch": True,
            }

            def rate(part: Decimal) -> str:
                return num((part / equity).quantize(Decimal("1e-4"))) if equity > 0 else "0"

            row = {
                "accountType": wanted,
                "accountIMRate": rate(position_im + order_im),
                "accountMMRate": rate(mm),
                "accountLTV": "0",
                "totalEquity": money(equity),
                "totalWalletBalance": money(acct.wallet),
                "totalMarginBalance": money(equity),
                "totalAvailableBalance": money(available),
                "totalPerpUPL": money(upnl),
                "totalInitialMargin": money(position_im + order_im),
                "totalMaintenanceMargin": money(mm),
                "coin": [entry] if coin in (None, SETTLE) else [],
            }
            return {"list": [row]}

    def set_margin_mode(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        """Unified accounts: the margin mode is account-wide (ISOLATED_MARGIN for Freqtrade)."""
        with self._lock:
            if not acct.config.unified:
                raise ApiError(10020, "your account is not a unified margin account")
            mode = _text(params, "setMarginMode")
            if mode not in MARGIN_MODES:
                raise ApiError(PARAM_ERROR, f"params error: setMarginMode {mode!r} invalid")
            if mode == "PORTFOLIO_MARGIN":
                raise ApiError(PARAM_ERROR, "PORTFOLIO_MARGIN is not supported by the emulator")
            if mode != acct.margin_mode:
                busy = any(p.size for p in acct.positions.values()) or acct.open_orders()
                if busy:
                    raise ApiError(
                        PARAM_ERROR,
                        "cannot switch margin mode with open positions or active orders",
                    )
                acct.margin_mode = mode
                acct.updated_ms = self.now_ms()
            return {"reasons": []}

    def switch_isolated(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        """Classic accounts: cross/isolated per symbol (tradeMode 0/1) with its leverage."""
        with self._lock:
            if acct.config.unified:
                raise ApiError(
                    UTA_FORBIDDEN, "The API cannot be accessed by unified account users."
                )
            _linear(params)
            symbol = _symbol(params)
            assert symbol is not None
            mode = _integer(params, "tradeMode", -1, -1, 1)
            if mode not in (0, 1):
                raise ApiError(PARAM_ERROR, "params error: tradeMode invalid")
            buy = _decimal(params, "buyLeverage", required=True)
            sell = _decimal(params, "sellLeverage", required=True)
            assert buy is not None and sell is not None
            pos = acct.position(symbol)
            if pos.trade_mode == mode:
                raise ApiError(
                    MARGIN_MODE_NOT_MODIFIED, "Cross/isolated margin mode is not modified"
                )
            if pos.size:
                raise ApiError(PARAM_ERROR, "cannot switch margin mode with an open position")
            self._validate_leverage(symbol, pos, buy, sell)
            pos.trade_mode, pos.leverage = mode, buy
            pos.updated_ms = self.now_ms()
            return {}

    def switch_mode(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            _linear(params)
            symbol = _symbol(params, required=False)
            if symbol is None and _text(params, "coin") is None:
                raise ApiError(PARAM_ERROR, "params error: symbol or coin is required")
            mode = _integer(params, "mode", -1, -1, 3)
            if mode not in (0, 3):
                raise ApiError(PARAM_ERROR, "params error: mode invalid")
            if mode == acct.position_mode:
                return {}
            if any(p.size for p in acct.positions.values()):
                raise ApiError(
                    POSITION_MODE_HAS_POSITION,
                    "You have an existing position, so position mode cannot be switched",
                )
            if acct.open_orders():
                raise ApiError(
                    POSITION_MODE_HAS_ORDERS,
                    "Open orders exist, so you cannot change position mode",
                )
            raise ApiError(PARAM_ERROR, "hedge mode (mode 3) is not supported by the emulator")

    def _validate_leverage(self, symbol: str, pos: Position, buy: Decimal, sell: Decimal) -> None:
        if buy != sell:
            raise ApiError(PARAM_ERROR, "buy leverage must equal sell leverage in one-way mode")
        if buy < 1 or buy != buy.quantize(Decimal("0.01")):
            raise ApiError(PARAM_ERROR, f"params error: leverage {buy} invalid")
        value = abs(pos.size) * pos.avg
        most = self.max_leverage(symbol, value)
        if buy > most:
            raise ApiError(
                RISK_LIMIT_LEVERAGE,
                f"Due to risk limit, cannot set leverage: {num(buy)} > maxLeverage {num(most)} "
                f"of the current risk limit tier",
            )

    def set_leverage(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            _linear(params)
            symbol = _symbol(params)
            assert symbol is not None
            buy = _decimal(params, "buyLeverage", required=True)
            sell = _decimal(params, "sellLeverage", required=True)
            assert buy is not None and sell is not None
            pos = acct.position(symbol)
            self._validate_leverage(symbol, pos, buy, sell)
            if buy == pos.leverage:
                raise ApiError(LEVERAGE_NOT_MODIFIED, "leverage not modified")
            if pos.size and buy < pos.leverage:
                extra = abs(pos.size) * pos.avg * (ONE / buy - ONE / pos.leverage)
                if extra > self._available(acct):
                    raise ApiError(INSUFFICIENT_BALANCE, "Insufficient available balance")
            pos.leverage = buy
            pos.updated_ms = self.now_ms()
            return {}

    # ---- positions -------------------------------------------------------------------------

    def position_list(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            category = _text(params, "category")
            if category != "linear":
                if category in ("inverse", "option"):
                    return {"category": category, "list": [], "nextPageCursor": ""}
                raise ApiError(PARAM_ERROR, f"Illegal category: {category!r}")
            symbol = _symbol(params, required=False)
            base = _text(params, "baseCoin")
            settle = _text(params, "settleCoin")
            if symbol is None and base is None and settle is None:
                raise ApiError(PARAM_ERROR, "params error: symbol, baseCoin or settleCoin required")
            if settle not in (None, SETTLE):
                return {"category": "linear", "list": [], "nextPageCursor": ""}
            if symbol is not None:
                positions = [acct.position(symbol)]
            else:
                positions = [
                    p
                    for s, p in sorted(acct.positions.items())
                    if p.size and base in (None, self.market(s).base)
                ]
            rows = [self._position_row(acct, p) for p in positions]
            page, cursor = _page(rows, params, 20, 200)
            return {"category": "linear", "list": page, "nextPageCursor": cursor}

    def _isolated(self, acct: AccountState, pos: Position) -> bool:
        if acct.config.unified:
            return acct.margin_mode == "ISOLATED_MARGIN"
        return pos.trade_mode == 1

    def _position_row(self, acct: AccountState, pos: Position) -> dict[str, Any]:
        market = self.market(pos.symbol)
        prices = self._prices(pos.symbol)
        mark = prices.mark if prices else pos.avg
        size = abs(pos.size)
        value = size * pos.avg
        tier = self._tier(pos.symbol, value) or {}
        mmr = Decimal(tier.get("maintenanceMargin", "0.005"))
        im = value / pos.leverage
        mm = value * mmr
        liq = bust = ""
        if size:
            long = pos.size > 0
            if self._isolated(acct, pos):
                # Freqtrade's and Bybit's isolated formula (no extra margin added).
                raw = pos.avg - (im - mm) / size if long else pos.avg + (im - mm) / size
            else:
                # Cross: the whole wallet backs the position (a simple approximation).
                cushion = (acct.wallet - mm) / size
                raw = pos.avg - cushion if long else pos.avg + cushion
            if raw > 0:
                liq = num(_to_tick(raw, market.tick, ROUND_CEILING if long else ROUND_FLOOR))
            edge = pos.avg * (ONE - ONE / pos.leverage if long else ONE + ONE / pos.leverage)
            bust = num(_to_tick(edge, market.tick))
        side = "Buy" if pos.size > 0 else "Sell" if pos.size < 0 else ""
        return {
            "positionIdx": 0,
            "riskId": int(tier.get("id", 1)),
            "riskLimitValue": str(tier.get("riskLimitValue", "")),
            "symbol": pos.symbol,
            "side": side,
            "size": num(size, market.step),
            "avgPrice": money(pos.avg) if size else "0",
            "positionValue": money(value) if size else "",
            "tradeMode": 0 if acct.config.unified else pos.trade_mode,
            "autoAddMargin": 0,
            "positionStatus": "Normal",
            "leverage": num(pos.leverage),
            "markPrice": num(mark),
            "liqPrice": liq,
            "bustPrice": bust,
            "positionIM": money(im) if size else "0",
            "positionMM": money(mm) if size else "0",
            "positionBalance": money(im) if size else "0",
            "tpslMode": "Full",
            "takeProfit": "",
            "stopLoss": "",
            "trailingStop": "0",
            "sessionAvgPrice": "",
            "delta": "",
            "gamma": "",
            "vega": "",
            "theta": "",
            "unrealisedPnl": money((mark - pos.avg) * pos.size) if size else "0",
            "curRealisedPnl": money(pos.cur_realised),
            "cumRealisedPnl": money(pos.cum_realised),
            "adlRankIndicator": 2 if size else 0,
            "createdTime": str(pos.created_ms or acct.created_ms),
            "updatedTime": str(pos.updated_ms or acct.created_ms),
            "seq": pos.seq,
            "isReduceOnly": False,
            "mmrSysUpdatedTime": "",
            "leverageSysUpdatedTime": "",
        }

    def closed_pnl(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            _linear(params)
            symbol = _symbol(params, required=False)
            start, end = _window(params, self.now_ms())
            rows = [
                r
                for r in reversed(acct.closed_pnl)
                if symbol in (None, r["symbol"]) and start <= int(r["updatedTime"]) <= end
            ]
            page, cursor = _page(rows, params, 50, 100)
            return {"category": "linear", "list": page, "nextPageCursor": cursor}

    def transaction_log(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            account_type = _text(params, "accountType") or "UNIFIED"
            if account_type != "UNIFIED" or not acct.config.unified:
                raise ApiError(PARAM_ERROR, "accountType only support UNIFIED")
            category = _text(params, "category")
            currency = _text(params, "currency") or _text(params, "baseCoin")
            kind = _text(params, "type")
            start, end = _window(params, self.now_ms())
            rows = [
                r
                for r in reversed(acct.transactions)
                if category in (None, r["category"])
                and currency in (None, r["currency"])
                and kind in (None, r["type"])
                and start <= int(r["transactionTime"]) <= end
            ]
            page, cursor = _page(rows, params, 20, 50)
            return {"list": page, "nextPageCursor": cursor}

    # ---- orders ----------------------------------------------------------------------------

    def create_order(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._match_locked()
            _linear(params)
            symbol = _symbol(params)
            assert symbol is not None
            market = self.market(symbol)
            side = _text(params, "side")
            if side not in ("Buy", "Sell"):
                raise ApiError(PARAM_ERROR, f"params error: side invalid: {side!r}")
            order_type = _text(params, "orderType")
            if order_type not in ("Market", "Limit"):
                raise ApiError(PARAM_ERROR, f"params error: orderType invalid: {order_type!r}")
            qty = _decimal(params, "qty", required=True)
            assert qty is not None
            if qty <= 0 or qty % market.step:
                raise ApiError(PARAM_ERROR, f"Qty invalid: {qty} (qtyStep {num(market.step)})")
            if qty < market.min_qty:
                raise ApiError(PARAM_ERROR, "The number of contracts exceeds minimum limit allowed")
            most = market.max_market_qty if order_type == "Market" else market.max_qty
            if qty > most:
                raise ApiError(PARAM_ERROR, "The number of contracts exceeds maximum limit allowed")
            price = None
            if order_type == "Limit":
                price = _decimal(params, "price", required=True)
                assert price is not None
                if price <= 0 or price % market.tick:
                    raise ApiError(
                        PARAM_ERROR, f"Price invalid: {price} (tickSize {num(market.tick)})"
                    )
            tif = _text(params, "timeInForce") or "GTC"
            if tif not in TIME_IN_FORCE:
                raise ApiError(PARAM_ERROR, f"params error: timeInForce invalid: {tif!r}")
            if order_type == "Market":
                tif = "IOC"
            position_idx = _integer(params, "positionIdx", 0, 0, 2)
            if position_idx != 0:
                raise ApiError(PARAM_ERROR, "position idx not match position mode")
            close_on_trigger = _flag(params, "closeOnTrigger")
            reduce_only = _flag(params, "reduceOnly") or close_on_trigger
            link_id = _text(params, "orderLinkId") or ""
            if len(link_id) > 36:
                raise ApiError(PARAM_ERROR, "params error: orderLinkId is longer than 36")
            if link_id and any(o.link_id == link_id for o in acct.orders.values()):
                raise ApiError(DUPLICATE_LINK_ID, "OrderLinkedID is duplicate")
            prices = self._require_prices(symbol)
            trigger_price = _decimal(params, "triggerPrice")
            direction, trigger_by = 0, ""
            if trigger_price is not None:
                direction = _integer(params, "triggerDirection", 0, 0, 2)
                if direction == 0:
                    raise ApiError(PARAM_ERROR, "params error: TriggerDirection invalid")
                trigger_by = _text(params, "triggerBy") or "LastPrice"
                if trigger_by not in TRIGGER_TYPES:
                    raise ApiError(PARAM_ERROR, f"params error: triggerBy invalid: {trigger_by}")
                self._check_trigger(market, trigger_price, direction, trigger_by, prices)
            reference = price if price is not None else prices.last
            if qty * reference < market.min_notional:
                raise ApiError(
                    MIN_NOTIONAL,
                    f"Order does not meet minimum order value {num(market.min_notional)}USDT",
                )
            pos = acct.position(symbol)
            if reduce_only and trigger_price is None and not self._reducible(pos, side):
                raise ApiError(REDUCE_ONLY_RULE, "Reduce-only rule not satisfied")
            now = self.now_ms()
            order = Order(
                order_id=str(uuid.uuid4()),
                link_id=link_id,
                symbol=symbol,
                side=side,
                order_type=order_type,
                qty=qty,
                price=price,
                time_in_force=tif,
                reduce_only=reduce_only,
                close_on_trigger=close_on_trigger,
                trigger_price=trigger_price,
                trigger_direction=direction,
                trigger_by=trigger_by,
                status="Untriggered" if trigger_price is not None else "New",
                created_ms=now,
                updated_ms=now,
                last_price_on_created=prices.last,
            )
            if trigger_price is None:
                self._check_margin(acct, order, reference)
            acct.orders[order.order_id] = order
            if trigger_price is None:
                self._activate(acct, order, prices, now)
            return {"orderId": order.order_id, "orderLinkId": order.link_id}

    def _check_trigger(
        self, market: Market, trigger: Decimal, direction: int, by: str, prices: Prices
    ) -> None:
        if trigger <= 0 or trigger % market.tick:
            raise ApiError(PARAM_ERROR, f"params error: triggerPrice invalid: {trigger}")
        current = self._trigger_source(prices, by)
        if direction == 1 and trigger <= current:
            raise ApiError(
                EXPECT_RISING,
                f"expect Rising, but trigger_price[{num(trigger)}] <= current[{num(current)}]"
                f"??{by}",
            )
        if direction == 2 and trigger >= current:
            raise ApiError(
                EXPECT_FALLING,
                f"expect Falling, but trigger_price[{num(trigger)}] >= current[{num(current)}]"
                f"??{by}",
            )

    @staticmethod
    def _trigger_source(prices: Prices, by: str) -> Decimal:
        return {"LastPrice": prices.last, "MarkPrice": prices.mark}.get(by, prices.index)

    def _open_order(self, acct: AccountState, params: dict[str, Any], missing: str) -> Order:
        """The open order `params` names, after matching what is due (lock held)."""
        self._match_locked()
        _linear(params)
        symbol = _symbol(params)
        order = self._order(acct, params)
        if order.symbol != symbol or not order.is_open:
            raise ApiError(ORDER_NOT_FOUND, missing)
        return order

    def amend_order(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            order = self._open_order(acct, params, "order not exists or too late to replace")
            market = self.market(order.symbol)
            prices = self._require_prices(order.symbol)
            qty = _decimal(params, "qty")
            price = _decimal(params, "price")
            trigger = _decimal(params, "triggerPrice")
            trigger_by = _text(params, "triggerBy")
            changed = False
            if qty is not None and qty != order.qty:
                if qty <= order.cum_qty or qty % market.step or qty < market.min_qty:
                    raise ApiError(PARAM_ERROR, f"Qty invalid: {qty}")
                changed = True
            if price is not None and price != order.price:
                if order.order_type != "Limit" or price <= 0 or price % market.tick:
                    raise ApiError(PARAM_ERROR, f"Price invalid: {price}")
                changed = True
            if trigger is not None and trigger != order.trigger_price:
                if order.status != "Untriggered":
                    raise ApiError(PARAM_ERROR, "triggerPrice can only be amended before trigger")
                changed = True
            if trigger_by is not None and trigger_by != order.trigger_by:
                if order.status != "Untriggered" or trigger_by not in TRIGGER_TYPES:
                    raise ApiError(PARAM_ERROR, f"params error: triggerBy invalid: {trigger_by}")
                changed = True
            if not changed:
                raise ApiError(
                    PARAM_ERROR,
                    "The order remains unchanged as the parameters entered "
                    "match the existing ones.",
                )
            if order.status == "Untriggered":
                self._check_trigger(
                    market,
                    trigger if trigger is not None else order.trigger_price or ZERO,
                    order.trigger_direction,
                    trigger_by or order.trigger_by,
                    prices,
                )
            if qty is not None:
                order.qty = qty
            if price is not None:
                order.price = price
            if trigger is not None:
                order.trigger_price = trigger
            if trigger_by is not None:
                order.trigger_by = trigger_by
            order.updated_ms = self.now_ms()
            if order.status != "Untriggered" and order.order_type == "Limit":
                # A new price that crosses the book fills at once, as taker.
                self._cross(acct, order, prices, order.updated_ms)
            return {"orderId": order.order_id, "orderLinkId": order.link_id}

    def _cancel(self, order: Order, now: int, cancel_type: str = "CancelByUser") -> None:
        if order.status == "Untriggered":
            order.status = "Deactivated"
        elif order.cum_qty:
            order.status = "PartiallyFilledCanceled"
        else:
            order.status = "Cancelled"
        order.cancel_type = cancel_type
        order.updated_ms = now

    def cancel_order(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            order = self._open_order(acct, params, "Order does not exist.")
            self._cancel(order, self.now_ms())
            return {"orderId": order.order_id, "orderLinkId": order.link_id}

    def cancel_all(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._match_locked()
            _linear(params)
            symbol = _symbol(params, required=False)
            base = _text(params, "baseCoin")
            settle = _text(params, "settleCoin")
            if symbol is None and base is None and settle is None:
                raise ApiError(PARAM_ERROR, "params error: symbol, baseCoin or settleCoin required")
            only = _text(params, "orderFilter")
            now = self.now_ms()
            done = []
            for order in acct.open_orders():
                if symbol not in (None, order.symbol):
                    continue
                if base not in (None, self.market(order.symbol).base):
                    continue
                if only == "Order" and order.conditional:
                    continue
                if only == "StopOrder" and not order.conditional:
                    continue
                self._cancel(order, now)
                done.append({"orderId": order.order_id, "orderLinkId": order.link_id})
            return {"list": done, "success": "1"}

    def _orders_query(
        self, acct: AccountState, params: dict[str, Any], *, open_only: bool
    ) -> list[Order]:
        category = _text(params, "category")
        if category != "linear":
            if category in ("spot", "inverse", "option"):
                return []
            raise ApiError(PARAM_ERROR, f"Illegal category: {category!r}")
        symbol = _symbol(params, required=False)
        base = _text(params, "baseCoin")
        settle = _text(params, "settleCoin")
        order_id = _text(params, "orderId")
        link_id = _text(params, "orderLinkId")
        status = _text(params, "orderStatus")
        only = _text(params, "orderFilter")
        by_id = order_id is not None or link_id is not None
        if open_only and not by_id and symbol is None and base is None and settle is None:
            raise ApiError(PARAM_ERROR, "params error: symbol, baseCoin or settleCoin required")
        if settle not in (None, SETTLE):
            return []
        found = []
        for order in reversed(list(acct.orders.values())):
            if order_id not in (None, order.order_id) or link_id not in (None, order.link_id):
                continue
            if symbol not in (None, order.symbol):
                continue
            if base not in (None, self.market(order.symbol).base):
                continue
            if (only == "Order" and order.conditional) or (
                only == "StopOrder" and not order.conditional
            ):
                continue
            if status is not None and order.status != status:
                continue
            found.append(order)
        return found

    def realtime_orders(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        """Open orders; by orderId/orderLinkId (or openOnly=1) also recent closed ones."""
        with self._lock:
            orders = self._orders_query(acct, params, open_only=True)
            by_id = _text(params, "orderId") or _text(params, "orderLinkId")
            open_only = _integer(params, "openOnly", 0, 0, 2)
            if not by_id:
                if open_only:
                    orders = [o for o in orders if not o.is_open][:500]
                else:
                    orders = [o for o in orders if o.is_open]
            rows = [self._order_row(o) for o in orders]
            page, cursor = _page(rows, params, 20, 50)
            return {"category": "linear", "list": page, "nextPageCursor": cursor}

    def order_history(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            orders = self._orders_query(acct, params, open_only=False)
            by_id = _text(params, "orderId") or _text(params, "orderLinkId")
            if not by_id:
                start, end = _window(params, self.now_ms())
                orders = [o for o in orders if start <= o.created_ms <= end]
                if _text(params, "orderStatus") is None:
                    orders = [o for o in orders if not o.is_open]
            rows = [self._order_row(o) for o in orders]
            page, cursor = _page(rows, params, 20, 50)
            return {"category": "linear", "list": page, "nextPageCursor": cursor}

    def execution_list(self, acct: AccountState, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            category = _text(params, "category")
            if category != "linear":
                if category in ("spot", "inverse", "option"):
                    return {"category": category, "list": [], "nextPageCursor": ""}
                raise ApiError(PARAM_ERROR, f"Illegal category: {category!r}")
            symbol = _symbol(params, required=False)
            base = _text(params, "baseCoin")
            order_id = _text(params, "orderId")
            link_id = _text(params, "orderLinkId")
            exec_type = _text(params, "execType")
            start, end = _window(params, self.now_ms())
            rows = [
                r
                for r in reversed(acct.executions)
                if symbol in (None, r["symbol"])
                and base in (None, self.market(r["symbol"]).base)
                and order_id in (None, r["orderId"])
                and link_id in (None, r["orderLinkId"])
                and exec_type in (None, r["execType"])
                and start <= int(r["execTime"]) <= end
            ]
            page, cursor = _page(rows, params, 50, 100)
            return {"category": "linear", "list": page, "nextPageCursor": cursor}

    def _order_row(self, order: Order) -> dict[str, Any]:
        market = self.market(order.symbol)
        filled = order.cum_qty
        avg = order.cum_value / filled if filled else None
        leaves = order.leaves
        return {
            "orderId": order.order_id,
            "orderLinkId": order.link_id,
            "blockTradeId": "",
            "symbol": order.symbol,
            "price": num(order.price, market.tick) if order.price is not None else "0",
            "qty": num(order.qty, market.step),
            "side": order.side,
            "isLeverage": "",
            "positionIdx": 0,
            "orderStatus": order.status,
            "createType": order.create_type,
            "cancelType": order.cancel_type,
            "rejectReason": order.reject_reason,
            "avgPrice": money(avg) if avg is not None else "",
            "leavesQty": num(leaves, market.step),
            "leavesValue": money(leaves * (order.price or ZERO)),
            "cumExecQty": num(filled, market.step),
            "cumExecValue": money(order.cum_value),
            "cumExecFee": money(order.cum_fee),
            "cumFeeDetail": {SETTLE: money(order.cum_fee)} if filled else {},
            "timeInForce": order.time_in_force,
            "orderType": order.order_type,
            "stopOrderType": "Stop" if order.conditional else "",
            "orderIv": "",
            "marketUnit": "",
            "slippageToleranceType": "UNKNOWN",
            "slippageTolerance": "0",
            "triggerPrice": num(order.trigger_price, market.tick) if order.conditional else "",
            "takeProfit": "",
            "stopLoss": "",
            "tpslMode": "",
            "ocoTriggerBy": "",
            "tpLimitPrice": "",
            "slLimitPrice": "",
            "tpTriggerBy": "",
            "slTriggerBy": "",
            "triggerDirection": order.trigger_direction,
            "triggerBy": order.trigger_by,
            "lastPriceOnCreated": num(order.last_price_on_created),
            "basePrice": num(order.last_price_on_created) if order.conditional else "",
            "reduceOnly": order.reduce_only,
            "closeOnTrigger": order.close_on_trigger,
            "placeType": "",
            "smpType": "None",
            "smpGroup": 0,
            "smpOrderId": "",
            "createdTime": str(order.created_ms),
            "updatedTime": str(order.updated_ms),
            "extraFees": "",
        }

    # ---- matching --------------------------------------------------------------------------

    def match(self) -> None:
        """Trigger conditional orders and fill resting limit orders the prices have reached."""
        with self._lock:
            self._match_locked()

    def _match_locked(self) -> None:
        if not any(acct.open_orders() for acct in self._accounts.values()):
            return
        now = self.now_ms()
        seen: dict[str, Prices | None] = {}
        for acct in self._accounts.values():
            for order in sorted(acct.open_orders(), key=lambda o: o.created_ms):
                if not order.is_open:  # e.g. cancelled by an earlier fill in this pass
                    continue
                if order.symbol not in seen:
                    seen[order.symbol] = self._prices(order.symbol)
                prices = seen[order.symbol]
                if prices is None:
                    continue
                if order.status == "Untriggered":
                    current = self._trigger_source(prices, order.trigger_by)
                    assert order.trigger_price is not None
                    if (order.trigger_direction == 1 and current >= order.trigger_price) or (
                        order.trigger_direction == 2 and current <= order.trigger_price
                    ):
                        self._trigger(acct, order, prices, now)
                    continue
                if order.reduce_only and not self._reducible(
                    acct.position(order.symbol), order.side
                ):
                    self._cancel(order, now, "CancelByReduceOnly")
                    continue
                assert order.price is not None
                if order.sign > 0:
                    touched = prices.last <= order.price
                else:
                    touched = prices.last >= order.price
                if touched:
                    self._execute(acct, order, order.leaves, order.price, True, now)

    def _trigger(self, acct: AccountState, order: Order, prices: Prices, now: int) -> None:
        order.triggered = True
        order.status = "Triggered"  # instantaneous: New (or Filled) right below
        order.updated_ms = now
        if not order.reduce_only:
            market = self.market(order.symbol)
            reference = order.price or self._taker_price(market, prices, order.side)
            order.status = "New"
            try:
                self._check_margin(acct, order, reference)
            except ApiError:
                order.status = "Rejected"
                order.reject_reason = "EC_InsufficientBalance"
                return
        order.status = "New"
        self._activate(acct, order, prices, now)

    def _activate(self, acct: AccountState, order: Order, prices: Prices, now: int) -> None:
        """A new (or just triggered) order meets the book: fill as taker, rest, or cancel."""
        market = self.market(order.symbol)
        if order.order_type == "Market":
            self._execute(
                acct, order, order.leaves, self._taker_price(market, prices, order.side), False, now
            )
            if order.is_open:  # capped by reduce-only: the rest of an IOC is cancelled
                self._cancel(order, now, "CancelByReduceOnly")
            return
        bid, ask = self._book(market, prices)
        assert order.price is not None
        crosses = order.price >= ask if order.sign > 0 else order.price <= bid
        if order.time_in_force == "PostOnly" and crosses:
            order.status = "Cancelled"
            order.reject_reason = "EC_PostOnlyWillTakeLiquidity"
            order.updated_ms = now
            return
        if crosses:
            self._cross(acct, order, prices, now)
            if order.is_open and order.time_in_force in ("IOC", "FOK"):
                self._cancel(order, now)
            return
        if order.time_in_force in ("IOC", "FOK"):
            self._cancel(order, now)

    def _cross(self, acct: AccountState, order: Order, prices: Prices, now: int) -> None:
        market = self.market(order.symbol)
        bid, ask = self._book(market, prices)
        assert order.price is not None
        if not (order.price >= ask if order.sign > 0 else order.price <= bid):
            return
        taker = self._taker_price(market, prices, order.side)
        fill = min(taker, order.price) if order.sign > 0 else max(taker, order.price)
        self._execute(acct, order, order.leaves, fill, False, now)

    def _execute(
        self, acct: AccountState, order: Order, qty: Decimal, price: Decimal, maker: bool, now: int
    ) -> None:
        pos = acct.position(order.symbol)
        if order.reduce_only:
            qty = min(qty, self._reducible(pos, order.side))
            if qty <= 0:
                self._cancel(order, now, "CancelByReduceOnly")
                return
        rate = acct.config.maker_fee if maker else acct.config.taker_fee
        value = qty * price
        fee = (value * rate).quantize(MONEY, rounding=ROUND_HALF_UP)
        closed = self._apply_fill(acct, pos, order, qty, price, fee, now)
        order.cum_qty += qty
        order.cum_value += value
        order.cum_fee += fee
        order.status = "Filled" if order.cum_qty >= order.qty else "PartiallyFilled"
        order.updated_ms = now
        market = self.market(order.symbol)
        prices = self._prices(order.symbol)
        exec_id = str(uuid.uuid4())
        acct.executions.append(
            {
                "symbol": order.symbol,
                "orderId": order.order_id,
                "orderLinkId": order.link_id,
                "side": order.side,
                "orderPrice": num(order.price, market.tick) if order.price is not None else "0",
                "orderQty": num(order.qty, market.step),
                "leavesQty": num(order.leaves, market.step),
                "createType": order.create_type,
                "orderType": order.order_type,
                "stopOrderType": "Stop" if order.conditional else "",
                "execFee": money(fee),
                "execFeeV2": "",
                "execId": exec_id,
                "execPrice": num(price, market.tick),
                "execQty": num(qty, market.step),
                "execType": "Trade",
                "execValue": money(value),
                "execTime": str(now),
                "feeCurrency": SETTLE,
                "isMaker": maker,
                "feeRate": num(rate),
                "tradeIv": "",
                "markIv": "",
                "markPrice": num(prices.mark) if prices else "",
                "indexPrice": num(prices.index) if prices else "",
                "underlyingPrice": "",
                "blockTradeId": "",
                "closedSize": num(closed, market.step),
                "seq": pos.seq,
                "extraFees": "",
            }
        )

    def _apply_fill(
        self,
        acct: AccountState,
        pos: Position,
        order: Order,
        qty: Decimal,
        price: Decimal,
        fee: Decimal,
        now: int,
    ) -> Decimal:
        """Position and wallet after one fill; returns the size it closed."""
        delta = qty * order.sign
        size = pos.size
        closed = ZERO
        pnl = ZERO
        if size == 0 or (size > 0) == (delta > 0):
            if size == 0:
                pos.created_ms, pos.cur_realised, pos.open_fee, pos.avg = now, ZERO, ZERO, ZERO
            total = abs(size) + qty
            pos.avg = (abs(size) * pos.avg + qty * price) / total
            pos.size = size + delta
            pos.open_fee += fee
        else:
            closed = min(abs(size), qty)
            direction = 1 if size > 0 else -1
            entry = pos.avg
            pnl = (price - entry) * closed * direction
            entry_fee = pos.open_fee * closed / abs(size)
            close_fee = fee * closed / qty
            pos.open_fee -= entry_fee
            pos.size = size + delta
            opened = qty - closed
            if pos.size == 0:
                pos.avg = ZERO
            elif opened > 0:  # flipped: the rest opens a new position at this price
                pos.avg, pos.open_fee, pos.created_ms = price, fee - close_fee, now
                pos.cur_realised = ZERO
            market = self.market(pos.symbol)
            acct.closed_pnl.append(
                {
                    "symbol": pos.symbol,
                    "orderId": order.order_id,
                    "side": order.side,
                    "qty": num(order.qty, market.step),
                    "orderPrice": num(order.price, market.tick) if order.price else "0",
                    "orderType": order.order_type,
                    "execType": "Trade",
                    "closedSize": num(closed, market.step),
                    "cumEntryValue": money(closed * entry),
                    "avgEntryPrice": money(entry),
                    "cumExitValue": money(closed * price),
                    "avgExitPrice": money(price),
                    "closedPnl": money(pnl - entry_fee - close_fee),
                    "openFee": money(entry_fee),
                    "closeFee": money(close_fee),
                    "fillCount": "1",
                    "leverage": num(pos.leverage),
                    "createdTime": str(now),
                    "updatedTime": str(now),
                }
            )
        realised = pnl - fee
        acct.wallet += realised
        acct.cum_realised += realised
        pos.cum_realised += realised
        pos.cur_realised += realised
        pos.updated_ms = now
        pos.seq = next(self._seq)
        acct.updated_ms = now
        acct.transactions.append(
            {
                "id": str(uuid.uuid4()),
                "symbol": pos.symbol,
                "category": "linear",
                "side": order.side,
                "transactionTime": str(now),
                "type": "TRADE",
                "qty": num(qty),
                "size": num(pos.size),
                "currency": SETTLE,
                "tradePrice": num(price),
                "funding": "",
                "fee": money(fee),
                "cashFlow": money(pnl),
                "change": money(realised),
                "cashBalance": money(acct.wallet),
                "feeRate": num(fee / (qty * price)) if qty * price else "0",
                "bonusChange": "",
                "tradeId": "",
                "orderId": order.order_id,
                "orderLinkId": order.link_id,
            }
        )
        return closed

    # ---- state for tests and the harness -----------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Every account's wallet, positions and orders (accounts named by label, never key)."""
        with self._lock:
            out: dict[str, Any] = {}
            for acct in self._accounts.values():
                out[acct.config.label] = {
                    "walletBalance": money(acct.wallet),
                    "marginMode": acct.margin_mode,
                    "positionMode": acct.position_mode,
                    "positions": [
                        self._position_row(acct, p)
                        for _, p in sorted(acct.positions.items())
                        if p.size or p.leverage != DEFAULT_LEVERAGE or p.cum_realised
                    ],
                    "orders": [self._order_row(o) for o in acct.orders.values()],
                    "executions": list(acct.executions),
                }
            return out
