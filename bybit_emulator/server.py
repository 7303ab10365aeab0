"""Bybit v5 REST emulator on 127.0.0.1 for ccxt's `bybit` class (and so Freqtrade).

Public REST: market metadata (instruments, risk-limit tiers) is pinned; candles, tickers, order
books and funding come from a `CandleSource`.

Private REST (only when accounts are configured): signed requests are checked like Bybit does
(`accounts.Authenticator`) and served by the matching engine in `engine.py`, which runs on the
price feed: the candle source's current candle, or a test's override.

Every request is recorded (API key redacted, signature never) in a bounded in-memory log and,
if asked, in a JSON-lines file that keeps everything. A path the emulator does not know answers
retCode 10404 and is flagged `expected: False`, so a test can fail on any call it did not plan
for. The test-control endpoints (`/_control/...`, to steer prices and read state) exist only when
the emulator is started with `test_control=True`; otherwise they are unknown paths like any other.
"""

from __future__ import annotations

import json
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NotRequired, TypedDict
from urllib.parse import parse_qsl, urlsplit

from .accounts import AccountConfig, Authenticator, redact_key
from .candles import BYBIT_INTERVALS, Candle, CandleSource, UnsupportedInterval
from .engine import AccountState, Prices, TradingEngine
from .errors import PARAM_ERROR, SYSTEM_ERROR, UNKNOWN_PATH, ApiError
from .instruments import TRADING, base_coin, decimals, instrument, linear_instruments
from .risk_limits import DEFAULT_TIERS_PATH, SYMBOLS_PER_PAGE, RiskLimitTable

HOST = "127.0.0.1"
FUNDING_INTERVAL_MS = 8 * 3_600_000
MAX_BODY_BYTES = 1 << 20
DEFAULT_IDLE_TIMEOUT_S = 15.0
DEFAULT_MAX_RECORDS = 10_000
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_TICK_S = 0.2
# How long a feed price is reused: the candle feed only changes at candle boundaries.
FEED_CACHE_S = 0.25


class RequestRecord(TypedDict):
    time: int
    method: str
    path: str
    query: dict[str, str]
    expected: bool
    ret_code: int
    api_key: NotRequired[str]  # redacted: first two characters at most
    account: NotRequired[str]  # the account's label, never its key
    body: NotRequired[Any]  # a POST body (parsed JSON, or text when it is not JSON)
    http_status: NotRequired[int]
    error: NotRequired[str]  # an internal error (a bug in the emulator)


@dataclass
class Request:
    method: str
    path: str
    raw_query: str
    query: dict[str, str]
    body: bytes
    headers: Mapping[str, str]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _num(value: float) -> str:
    """Exact decimal text of a float, never scientific: `7.8e-05` -> `0.000078`."""
    return format(Decimal(repr(float(value))), "f")


def _fixed(value: float, places: int) -> str:
    return f"{value:.{places}f}"


def _int_param(query: dict[str, str], name: str, default: int | None, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(PARAM_ERROR, f"{name} is required")
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(PARAM_ERROR, f"{name} must be an integer") from exc
    if not lo <= value <= hi:
        raise ApiError(PARAM_ERROR, f"{name} must be in [{lo}, {hi}]")
    return value


def _opt_ms(query: dict[str, str], name: str) -> int | None:
    raw = query.get(name)
    return None if raw in (None, "") else _int_param(query, name, None, 0, 2**62)


def _cursor(query: dict[str, str]) -> int:
    # Cursors are opaque to clients; here they are offsets. ccxt sends them back unencoded.
    return _int_param(query, "cursor", 0, 0, 10**9)


def _category(query: dict[str, str], allowed: tuple[str, ...], default: str | None = None) -> str:
    category = query.get("category") or default
    if category not in allowed:
        raise ApiError(PARAM_ERROR, f"Illegal category: {category!r}")
    return category


def _optional_symbol(query: dict[str, str]) -> str | None:
    symbol = query.get("symbol")
    if symbol and instrument(symbol) is None:
        raise ApiError(PARAM_ERROR, f"Not supported symbols: {symbol}")
    return symbol or None


def _symbol(query: dict[str, str]) -> str:
    symbol = _optional_symbol(query)
    if symbol is None:
        raise ApiError(PARAM_ERROR, "symbol is required")
    return symbol


def _info(symbol: str) -> dict[str, Any]:
    row = instrument(symbol)
    if row is None:  # callers validated the symbol already
        raise ApiError(PARAM_ERROR, f"Not supported symbols: {symbol}")
    return row


PrivateHandler = Callable[[AccountState, dict[str, Any]], dict[str, Any]]


class BybitApp:
    """The endpoints, independent of HTTP plumbing (so they are easy to call directly)."""

    def __init__(
        self,
        candles: CandleSource | None = None,
        tiers_path: Path = DEFAULT_TIERS_PATH,
        risk_limit_symbols_per_page: int = SYMBOLS_PER_PAGE,
        *,
        accounts: Sequence[AccountConfig] = (),
        test_control: bool = False,
        slippage_bps: Decimal | float | str = 0,
    ) -> None:
        self.candles = candles
        self.risk_limits = RiskLimitTable(tiers_path)
        self.risk_limit_symbols_per_page = risk_limit_symbols_per_page
        self.test_control = test_control
        self.routes: dict[str, Callable[[dict[str, str]], dict[str, Any]]] = {
            "/v5/market/time": self.time,
            "/v5/market/instruments-info": self.instruments_info,
            "/v5/market/risk-limit": self.risk_limit,
            "/v5/market/kline": self.kline,
            "/v5/market/mark-price-kline": self.mark_price_kline,
            "/v5/market/tickers": self.tickers,
            "/v5/market/orderbook": self.orderbook,
            "/v5/market/funding/history": self.funding_history,
        }
        self._overrides: dict[str, Prices] = {}
        self._feed_cache: dict[str, tuple[float, Prices | None]] = {}
        self._price_lock = threading.Lock()
        self.authenticator = Authenticator(list(accounts))
        self.engine: TradingEngine | None = None
        self.private_routes: dict[tuple[str, str], PrivateHandler] = {}
        if self.authenticator:
            self.engine = TradingEngine(
                accounts,
                self.prices,
                self.risk_limits,
                slippage_bps=Decimal(str(slippage_bps)),
            )
            e = self.engine
            self.private_routes = {
                ("GET", "/v5/user/query-api"): e.query_api,
                ("GET", "/v5/account/info"): e.account_info,
                ("GET", "/v5/account/wallet-balance"): e.wallet_balance,
                ("GET", "/v5/account/fee-rate"): e.fee_rate,
                ("GET", "/v5/account/transaction-log"): e.transaction_log,
                ("POST", "/v5/account/set-margin-mode"): e.set_margin_mode,
                ("GET", "/v5/asset/coin/query-info"): e.coin_info,
                ("GET", "/v5/position/list"): e.position_list,
                ("GET", "/v5/position/closed-pnl"): e.closed_pnl,
                ("POST", "/v5/position/switch-mode"): e.switch_mode,
                ("POST", "/v5/position/switch-isolated"): e.switch_isolated,
                ("POST", "/v5/position/set-leverage"): e.set_leverage,
                ("POST", "/v5/order/create"): e.create_order,
                ("POST", "/v5/order/amend"): e.amend_order,
                ("POST", "/v5/order/cancel"): e.cancel_order,
                ("POST", "/v5/order/cancel-all"): e.cancel_all,
                ("GET", "/v5/order/realtime"): e.realtime_orders,
                ("GET", "/v5/order/history"): e.order_history,
                ("GET", "/v5/execution/list"): e.execution_list,
            }
        self.control_routes: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {}
        if test_control:
            self.control_routes = {
                ("POST", "/_control/price"): self._control_price,
                ("POST", "/_control/match"): self._control_match,
                ("GET", "/_control/state"): self._control_state,
            }

    # ---- the request path ----------------------------------------------------------------------

    def dispatch(self, req: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        """(Bybit answer, extra record fields) for one request; never raises ApiError."""
        extras: dict[str, Any] = {"expected": True}
        payload: dict[str, Any] = {"retCode": 0, "retMsg": "OK", "result": {}, "retExtInfo": {}}
        if req.method == "POST":
            extras["body"] = _loggable_body(req.body)
        try:
            if self.engine is not None:
                self.engine.match()  # resting orders see the price before anything else
            if req.method == "GET" and req.path in self.routes:
                payload["result"] = self.routes[req.path](req.query)
            elif (req.method, req.path) in self.private_routes:
                payload["result"] = self._private(req, extras)
            elif (req.method, req.path) in self.control_routes:
                params = req.query if req.method == "GET" else _json_params(req.body)
                payload["result"] = self.control_routes[(req.method, req.path)](params)
            else:
                extras["expected"] = False
                payload["retCode"] = UNKNOWN_PATH
                payload["retMsg"] = f"unknown path {req.method} {req.path}"
        except ApiError as exc:
            payload["retCode"], payload["retMsg"] = exc.code, exc.message
            payload["result"] = {}
        except Exception as exc:  # a bug in the emulator: answer like Bybit's system error
            traceback.print_exc(file=sys.stderr)
            extras["error"] = f"{type(exc).__name__}: {exc}"
            payload["retCode"], payload["retMsg"] = SYSTEM_ERROR, "System error. Please try again."
            payload["result"] = {}
        return payload, extras

    def _private(self, req: Request, extras: dict[str, Any]) -> dict[str, Any]:
        assert self.engine is not None
        key = req.headers.get("X-BAPI-API-KEY")
        if key:
            extras["api_key"] = redact_key(key)
        signed = req.raw_query if req.method == "GET" else req.body.decode("utf-8", "replace")
        config = self.authenticator.check(req.headers, signed, int(time.time() * 1000))
        extras["account"] = config.label
        params = req.query if req.method == "GET" else _json_params(req.body)
        handler = self.private_routes[(req.method, req.path)]
        return handler(self.engine.account(config.key), params)

    # ---- prices: the feed, or a test's override ------------------------------------------------

    def prices(self, symbol: str) -> Prices | None:
        """Last, mark and index price of `symbol` now (None without candles or an override)."""
        with self._price_lock:
            override = self._overrides.get(symbol)
            if override is not None:
                return override
            cached = self._feed_cache.get(symbol)
            now = time.monotonic()
            if cached is not None and now - cached[0] < FEED_CACHE_S:
                return cached[1]
        found = self._feed_prices(symbol)
        with self._price_lock:
            self._feed_cache[symbol] = (now, found)
        return found

    def _feed_prices(self, symbol: str) -> Prices | None:
        base = base_coin(symbol)
        if self.candles is None or base is None or not self.candles.has_data(base):
            return None
        snap = self.candles.snapshot(base)
        if snap is None:
            return None
        tick = Decimal(_info(symbol)["priceFilter"]["tickSize"])
        last = Decimal(_num(snap.last.close)).quantize(tick)
        mark = Decimal(_num(snap.mark_price)).quantize(tick)
        return Prices(last, mark, mark)

    def set_price(
        self,
        symbol: str,
        last: Decimal | float | str | None,
        mark: Decimal | float | str | None = None,
        index: Decimal | float | str | None = None,
    ) -> Prices | None:
        """Override the feed for `symbol` (mark and index default to last); None clears it."""
        info = instrument(symbol)
        if info is None:
            raise ApiError(PARAM_ERROR, f"Not supported symbols: {symbol}")
        with self._price_lock:
            self._feed_cache.pop(symbol, None)
            if last is None:
                self._overrides.pop(symbol, None)
                return None
            tick = Decimal(info["priceFilter"]["tickSize"])
            values = []
            for value in (last, mark if mark is not None else last, index):
                if value is None:
                    values.append(values[1])
                    continue
                try:
                    parsed = Decimal(str(value))
                except InvalidOperation:
                    raise ApiError(PARAM_ERROR, f"price invalid: {value!r}") from None
                if not parsed.is_finite() or parsed <= 0:
                    raise ApiError(PARAM_ERROR, f"price invalid: {value!r}")
                values.append(parsed.quantize(tick))
            prices = self._overrides[symbol] = Prices(*values)
        if self.engine is not None:
            self.engine.match()
        return prices

    def clear_prices(self) -> None:
        with self._price_lock:
            self._overrides.clear()
            self._feed_cache.clear()

    def _control_price(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("clear_all"):
            self.clear_prices()
            return {"overrides": {}}
        symbol = str(params.get("symbol") or "")
        prices = self.set_price(
            symbol, params.get("price"), params.get("mark"), params.get("index")
        )
        shown = None if prices is None else {k: str(v) for k, v in prices._asdict().items()}
        return {"symbol": symbol, "override": shown}

    def _control_match(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.engine is not None:
            self.engine.match()
        return {}

    def _control_state(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.state()

    def state(self) -> dict[str, Any]:
        """Price overrides and every account's wallet, positions, orders and executions."""
        with self._price_lock:
            overrides = {
                s: {k: str(v) for k, v in p._asdict().items()} for s, p in self._overrides.items()
            }
        accounts = self.engine.state() if self.engine is not None else {}
        return {"overrides": overrides, "accounts": accounts}

    # ---- metadata ----------------------------------------------------------------------------

    def time(self, query: dict[str, str]) -> dict[str, Any]:
        ns = time.time_ns()
        return {"timeSecond": str(ns // 1_000_000_000), "timeNano": str(ns)}

    def instruments_info(self, query: dict[str, str]) -> dict[str, Any]:
        category = _category(query, ("linear", "inverse", "spot", "option"))
        if category == "spot":
            return {"category": "spot", "list": []}
        if category != "linear":
            return {"category": category, "list": [], "nextPageCursor": ""}
        limit = _int_param(query, "limit", 500, 1, 1000)
        offset = _cursor(query)
        # Bybit returns only Trading symbols unless asked for another status (e.g. PreLaunch).
        status = query.get("status") or TRADING
        rows = [
            row
            for row in linear_instruments()
            if row["status"] == status
            and query.get("symbol") in (None, "", row["symbol"])
            and query.get("baseCoin") in (None, "", row["baseCoin"])
        ]
        page = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        return {
            "category": "linear",
            "list": page,
            "nextPageCursor": str(offset + limit) if more else "",
        }

    def risk_limit(self, query: dict[str, str]) -> dict[str, Any]:
        category = _category(query, ("linear", "inverse"))
        if category == "inverse":
            return {"category": "inverse", "list": [], "nextPageCursor": ""}
        symbol = _optional_symbol(query)
        rows, following = self.risk_limits.page(
            symbol, _cursor(query), self.risk_limit_symbols_per_page
        )
        return {
            "category": "linear",
            "list": rows,
            "nextPageCursor": "" if following is None else str(following),
        }

    # ---- candles -----------------------------------------------------------------------------

    def _klines(self, query: dict[str, str], mark: bool) -> tuple[str, list[Candle]]:
        _category(query, ("linear",), default="linear")
        symbol = _symbol(query)
        interval = query.get("interval", "")
        if interval not in BYBIT_INTERVALS:
            raise ApiError(PARAM_ERROR, f"Invalid period: interval={interval!r}")
        limit = _int_param(query, "limit", 200, 1, 1000)
        start, end = _opt_ms(query, "start"), _opt_ms(query, "end")
        base = base_coin(symbol)
        if self.candles is None or base is None:
            return symbol, []
        try:
            found = self.candles.klines(
                base,
                interval,
                kind="mark" if mark else "trade",
                start=start,
                end=end,
                limit=limit,
            )
        except UnsupportedInterval as exc:
            raise ApiError(PARAM_ERROR, str(exc)) from exc
        return symbol, found

    def kline(self, query: dict[str, str]) -> dict[str, Any]:
        symbol, found = self._klines(query, mark=False)
        qty_places = decimals(_info(symbol)["lotSizeFilter"]["qtyStep"])
        rows = [
            [
                str(c.start_ms),
                _num(c.open),
                _num(c.high),
                _num(c.low),
                _num(c.close),
                _fixed(c.volume, qty_places),
                # Bybit's turnover is sum(price * qty); the typical price stands in for it.
                _fixed(c.volume * (c.high + c.low + c.close) / 3, 4),
            ]
            for c in found
        ]
        return {"category": "linear", "symbol": symbol, "list": rows}

    def mark_price_kline(self, query: dict[str, str]) -> dict[str, Any]:
        symbol, found = self._klines(query, mark=True)
        rows = [
            [str(c.start_ms), _num(c.open), _num(c.high), _num(c.low), _num(c.close)] for c in found
        ]
        return {"category": "linear", "symbol": symbol, "list": rows}

    def funding_history(self, query: dict[str, str]) -> dict[str, Any]:
        _category(query, ("linear",))
        symbol = _symbol(query)
        limit = _int_param(query, "limit", 200, 1, 200)
        start, end = _opt_ms(query, "startTime"), _opt_ms(query, "endTime")
        if start is not None and end is None:
            # Bybit refuses startTime alone; ccxt always adds endTime when it sends since.
            raise ApiError(PARAM_ERROR, "endTime is required when startTime is passed")
        base = base_coin(symbol)
        rates = (
            []
            if self.candles is None or base is None
            else self.candles.funding_rates(base, start=start, end=end, limit=limit)
        )
        rows = [
            {"symbol": symbol, "fundingRate": _num(rate), "fundingRateTimestamp": str(ts)}
            for ts, rate in rates
        ]
        return {"category": "linear", "list": rows}

    # ---- prices now --------------------------------------------------------------------------

    def tickers(self, query: dict[str, str]) -> dict[str, Any]:
        category = _category(query, ("linear", "inverse", "spot", "option"))
        if category != "linear":
            return {"category": category, "list": []}
        symbol = _optional_symbol(query)
        symbols = [symbol] if symbol else [row["symbol"] for row in linear_instruments()]
        rows = [row for row in (self._ticker(s) for s in symbols) if row is not None]
        return {"category": "linear", "list": rows}

    def _ticker(self, symbol: str) -> dict[str, Any] | None:
        base = base_coin(symbol)
        prices = self.prices(symbol)
        if base is None or prices is None:
            return None
        snap = self.candles.snapshot(base) if self.candles is not None else None
        info = _info(symbol)
        tick = Decimal(info["priceFilter"]["tickSize"])
        qty_places = decimals(info["lotSizeFilter"]["qtyStep"])
        last = prices.last
        # One-tick spread around the last price keeps dry-run limit orders filling like the candles.
        bid, ask = last, last + tick
        now = _now_ms()
        if snap is not None:
            size = self._level_size(info, snap.last)
            open_interest = snap.volume_24h / 2
            prev_24h, prev_1h = snap.prev_price_24h, snap.prev_price_1h
            high, low = max(snap.high_24h, float(last)), min(snap.low_24h, float(last))
            volume, turnover, time_ms = snap.volume_24h, snap.turnover_24h, snap.time_ms
            rate = _num(snap.funding_rate) if snap.funding_rate is not None else "0"
        else:  # an override without candles: a flat day at the override price
            size = str(Decimal(info["lotSizeFilter"]["minOrderQty"]) * 1000)
            open_interest = volume = turnover = 0.0
            prev_24h = prev_1h = high = low = float(last)
            time_ms, rate = now, "0"
        change = (float(last) - prev_24h) / prev_24h
        next_funding = (time_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
        return {
            "symbol": symbol,
            "lastPrice": str(last),
            "indexPrice": str(prices.index),
            "markPrice": str(prices.mark),
            "prevPrice24h": _num(prev_24h),
            "price24hPcnt": _fixed(change, 6),
            "highPrice24h": _num(high),
            "lowPrice24h": _num(low),
            "prevPrice1h": _num(prev_1h),
            # ccxt treats a ticker without openInterestValue as spot, so it must be present.
            "openInterest": _fixed(open_interest, qty_places),
            "openInterestValue": _fixed(open_interest * float(last), 2),
            "turnover24h": _fixed(turnover, 4),
            "volume24h": _fixed(volume, qty_places),
            "fundingRate": rate,
            "nextFundingTime": str(next_funding),
            "predictedDeliveryPrice": "",
            "basisRate": "",
            "deliveryFeeRate": "",
            "deliveryTime": "0",
            "bid1Price": str(bid),
            "bid1Size": size,
            "ask1Price": str(ask),
            "ask1Size": size,
            "basis": "",
        }

    @staticmethod
    def _level_size(info: dict[str, Any], candle: Candle) -> str:
        """A depth per level from the candle's volume, never below ten minimum orders."""
        step = Decimal(info["lotSizeFilter"]["qtyStep"])
        floor = Decimal(info["lotSizeFilter"]["minOrderQty"]) * 10
        size = (Decimal(repr(candle.volume)) / 20).quantize(step)
        return str(max(size, floor))

    def orderbook(self, query: dict[str, str]) -> dict[str, Any]:
        _category(query, ("linear",))
        symbol = _symbol(query)
        limit = _int_param(query, "limit", 25, 1, 500)
        now = _now_ms()
        base = base_coin(symbol)
        prices = self.prices(symbol)
        bids: list[list[str]] = []
        asks: list[list[str]] = []
        if prices is not None and base is not None:
            info = _info(symbol)
            tick = Decimal(info["priceFilter"]["tickSize"])
            snap = self.candles.snapshot(base) if self.candles is not None else None
            if snap is not None:
                size = self._level_size(info, snap.last)
            else:
                size = str(Decimal(info["lotSizeFilter"]["minOrderQty"]) * 1000)
            last = prices.last
            bids = [[str(last - tick * i), size] for i in range(limit) if last - tick * i > 0]
            asks = [[str(last + tick * (i + 1)), size] for i in range(limit)]
        return {"s": symbol, "b": bids, "a": asks, "ts": now, "u": now, "seq": now, "cts": now}


def _loggable_body(body: bytes) -> Any:
    """A POST body as the log keeps it: parsed JSON, or (truncated) text if it is not JSON."""
    text = body.decode("utf-8", "replace")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text[:2000]


def _json_params(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        params = json.loads(body)
    except ValueError:
        raise ApiError(PARAM_ERROR, "Request parameter error: the body is not valid JSON") from None
    if not isinstance(params, dict):
        raise ApiError(PARAM_ERROR, "Request parameter error: the body must be a JSON object")
    return params


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A real listen backlog: bursts of connections wait in the kernel instead of being refused.
    request_queue_size = 128
    app: BybitApp
    recorder: Callable[[RequestRecord], None]
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S

    def __init__(self, address: tuple[str, int], max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        # Bounded threads: a connection beyond the limit is closed at once, never queued forever.
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that resets or drops its connection (a killed bot) is normal; anything else
        # is a bug worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _BadRequest(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # Keep-alive, as ccxt's HTTP sessions expect; every answer carries Content-Length.
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        # A socket timeout on every read: an idle keep-alive connection, a client that sends
        # nothing or half a request, is closed after `idle_timeout` instead of holding a thread.
        self.timeout = self.server.idle_timeout
        super().setup()
        # Headers and body leave in one write; no Nagle delay waiting for the client's ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        # The request log replaces http.server's stderr chatter.
        pass

    def _content_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            if self.headers.get("Transfer-Encoding"):
                raise _BadRequest("chunked bodies are not supported; send Content-Length")
            return 0
        try:
            length = int(raw)
        except ValueError:
            raise _BadRequest(f"bad Content-Length {raw[:40]!r}") from None
        if length < 0:
            raise _BadRequest(f"bad Content-Length {raw[:40]!r}")
        if length > MAX_BODY_BYTES:
            raise _BadRequest(f"body too large ({length} > {MAX_BODY_BYTES} bytes)")
        return length

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            length = self._content_length()
        except _BadRequest as exc:
            # The rest of the stream cannot be trusted: answer, then close.
            self.close_connection = True
            payload = {"retCode": PARAM_ERROR, "retMsg": str(exc), "result": {}, "retExtInfo": {}}
            self._answer(400, payload, method, parts.path, query, {"expected": False})
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:  # the client went away (or timed out) mid-body
            self.close_connection = True
            return
        request = Request(method, parts.path, parts.query, query, body, self.headers)
        payload, extras = self.server.app.dispatch(request)
        self._answer(200, payload, method, parts.path, query, extras)

    def _answer(
        self,
        status: int,
        payload: dict[str, Any],
        method: str,
        path: str,
        query: dict[str, str],
        extras: dict[str, Any],
    ) -> None:
        stamp = _now_ms()
        payload["time"] = stamp
        record = RequestRecord(
            time=stamp,
            method=method,
            path=path,
            query=query,
            expected=bool(extras.pop("expected", True)),
            ret_code=int(payload["retCode"]),
        )
        record.update(extras)  # type: ignore[typeddict-item]
        if status != 200:
            record["http_status"] = status
        self.server.recorder(record)
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n" + body)  # end_headers() plus the body, one send
        self.flush_headers()


class Emulator:
    """A running emulator: its address, its request record, its state, and how to stop it."""

    def __init__(
        self,
        server: _Server,
        log_path: Path | None,
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        tick_s: float = DEFAULT_TICK_S,
    ) -> None:
        self._server = server
        self._lock = threading.Lock()
        # Bounded in memory; the file log (if any) keeps everything.
        self._records: deque[RequestRecord] = deque(maxlen=max_records)
        self._unexpected: deque[RequestRecord] = deque(maxlen=max_records)
        self._errors: deque[RequestRecord] = deque(maxlen=max_records)
        self.total_requests = 0
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
        server.recorder = self._record
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"bybit-emulator-{self.port}",
            daemon=True,
        )
        self._stopped = False
        self._halt = threading.Event()
        self._ticker: threading.Thread | None = None
        self._thread.start()
        if server.app.engine is not None and tick_s > 0:
            # Matching without any client: a resting stop fires while the bot is down.
            self._ticker = threading.Thread(
                target=self._tick, args=(tick_s,), name=f"bybit-matcher-{self.port}", daemon=True
            )
            self._ticker.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def app(self) -> BybitApp:
        return self._server.app

    @property
    def engine(self) -> TradingEngine:
        if self._server.app.engine is None:
            raise RuntimeError("no accounts configured: the emulator has no private API")
        return self._server.app.engine

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the newest `max_records` requests, oldest first."""
        with self._lock:
            return list(self._records)

    def unexpected_requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._unexpected)

    def internal_errors(self) -> list[RequestRecord]:
        """Requests the emulator failed on (retCode 10016 with a traceback on stderr)."""
        with self._lock:
            return list(self._errors)

    def set_price(
        self,
        symbol: str,
        last: Decimal | float | str | None,
        mark: Decimal | float | str | None = None,
        index: Decimal | float | str | None = None,
    ) -> None:
        """Override the feed's price of `symbol` until cleared with `last=None`."""
        self.app.set_price(symbol, last, mark, index)

    def prices(self, symbol: str) -> Prices | None:
        return self.app.prices(symbol)

    def state(self) -> dict[str, Any]:
        """Wallets, positions, orders and executions per account label (never keys)."""
        return self.app.state()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._halt.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> Emulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _tick(self, interval: float) -> None:
        engine = self._server.app.engine
        assert engine is not None
        while not self._halt.wait(interval):
            try:
                engine.match()
            except Exception:
                traceback.print_exc(file=sys.stderr)

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.total_requests += 1
            self._records.append(record)
            if not record["expected"]:
                self._unexpected.append(record)
            if "error" in record:
                self._errors.append(record)
            if self._log is not None:
                self._log.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
                self._log.flush()


def start_emulator(
    port: int = 0,
    data_dir: Path | None = None,
    log_path: Path | None = None,
    *,
    candles: CandleSource | None = None,
    tiers_path: Path = DEFAULT_TIERS_PATH,
    risk_limit_symbols_per_page: int = SYMBOLS_PER_PAGE,
    accounts: Sequence[AccountConfig] = (),
    test_control: bool = False,
    slippage_bps: Decimal | float | str = 0,
    tick_s: float = DEFAULT_TICK_S,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    max_records: int = DEFAULT_MAX_RECORDS,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> Emulator:
    """Serve the emulator on 127.0.0.1:`port` (0 picks a free port) in a daemon thread.

    `data_dir` holds Freqtrade futures feather files served in historical mode; pass `candles`
    instead for another mode (e.g. `CandleSource.wall_clock(dir)`). Without either, the market
    metadata endpoints work and candle endpoints answer empty lists. Raises OSError if the port is
    taken.

    `accounts` switches the private API on (without them private paths are unknown, 10404).
    `test_control` adds the /_control/ endpoints (price override, state); keep it off outside
    tests. `slippage_bps` moves taker fills against the taker; `tick_s` is the period of the
    background matching; `idle_timeout_s` closes idle or stuck connections.
    """
    if data_dir is not None and candles is not None:
        raise ValueError("pass data_dir or candles, not both")
    if data_dir is not None:
        candles = CandleSource.historical(Path(data_dir))
    app = BybitApp(
        candles,
        tiers_path,
        risk_limit_symbols_per_page,
        accounts=accounts,
        test_control=test_control,
        slippage_bps=slippage_bps,
    )
    server = _Server((HOST, port), max_connections)
    server.app = app
    server.idle_timeout = idle_timeout_s
    return Emulator(
        server, Path(log_path) if log_path else None, max_records=max_records, tick_s=tick_s
    )
