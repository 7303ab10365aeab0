"""Bybit v5 public REST emulator on 127.0.0.1 for ccxt's `bybit` class (and so Freqtrade).

Market metadata (instruments, risk-limit tiers) is pinned; candles, tickers, order books and
funding come from a `CandleSource`. Every request is recorded; a path the emulator does not know
answers retCode 10404 and is flagged `expected: False`, so a test can fail on any call it did not
plan for.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict
from urllib.parse import parse_qsl, urlsplit

from .candles import BYBIT_INTERVALS, Candle, CandleSource, UnsupportedInterval
from .instruments import TRADING, base_coin, decimals, instrument, linear_instruments
from .risk_limits import DEFAULT_TIERS_PATH, SYMBOLS_PER_PAGE, RiskLimitTable

HOST = "127.0.0.1"
FUNDING_INTERVAL_MS = 8 * 3_600_000
PARAM_ERROR = 10001
UNKNOWN_PATH = 10404


class RequestRecord(TypedDict):
    time: int
    method: str
    path: str
    query: dict[str, str]
    expected: bool
    ret_code: int


class ApiError(Exception):
    """A Bybit-style error answer (HTTP 200 with a non-zero retCode, as Bybit does)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


class BybitApp:
    """The endpoints, independent of HTTP plumbing (so they are easy to call directly)."""

    def __init__(
        self,
        candles: CandleSource | None = None,
        tiers_path: Path = DEFAULT_TIERS_PATH,
        risk_limit_symbols_per_page: int = SYMBOLS_PER_PAGE,
    ) -> None:
        self.candles = candles
        self.risk_limits = RiskLimitTable(tiers_path)
        self.risk_limit_symbols_per_page = risk_limit_symbols_per_page
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
        if self.candles is None or base is None:
            return None
        snap = self.candles.snapshot(base)
        if snap is None:
            return None
        info = _info(symbol)
        tick = Decimal(info["priceFilter"]["tickSize"])
        qty_places = decimals(info["lotSizeFilter"]["qtyStep"])
        last = Decimal(_num(snap.last.close)).quantize(tick)
        # One-tick spread around the last price keeps dry-run limit orders filling like the candles.
        bid, ask = last, last + tick
        size = self._level_size(info, snap.last)
        open_interest = snap.volume_24h / 2
        change = (snap.last.close - snap.prev_price_24h) / snap.prev_price_24h
        next_funding = (snap.time_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
        mark = _num(snap.mark_price)
        return {
            "symbol": symbol,
            "lastPrice": str(last),
            "indexPrice": mark,
            "markPrice": mark,
            "prevPrice24h": _num(snap.prev_price_24h),
            "price24hPcnt": _fixed(change, 6),
            "highPrice24h": _num(snap.high_24h),
            "lowPrice24h": _num(snap.low_24h),
            "prevPrice1h": _num(snap.prev_price_1h),
            # ccxt treats a ticker without openInterestValue as spot, so it must be present.
            "openInterest": _fixed(open_interest, qty_places),
            "openInterestValue": _fixed(open_interest * snap.last.close, 2),
            "turnover24h": _fixed(snap.turnover_24h, 4),
            "volume24h": _fixed(snap.volume_24h, qty_places),
            "fundingRate": _num(snap.funding_rate) if snap.funding_rate is not None else "0",
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
        snap = None if self.candles is None or base is None else self.candles.snapshot(base)
        bids: list[list[str]] = []
        asks: list[list[str]] = []
        if snap is not None:
            info = _info(symbol)
            tick = Decimal(info["priceFilter"]["tickSize"])
            last = Decimal(_num(snap.last.close)).quantize(tick)
            size = self._level_size(info, snap.last)
            bids = [[str(last - tick * i), size] for i in range(limit)]
            asks = [[str(last + tick * (i + 1)), size] for i in range(limit)]
        return {"s": symbol, "b": bids, "a": asks, "ts": now, "u": now, "seq": now, "cts": now}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: BybitApp
    recorder: Callable[[RequestRecord], None]

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # Keep-alive, as ccxt's HTTP sessions expect; every answer carries Content-Length.
    protocol_version = "HTTP/1.1"

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

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        route = self.server.app.routes.get(parts.path) if method == "GET" else None
        payload: dict[str, Any] = {"retCode": 0, "retMsg": "OK", "result": {}, "retExtInfo": {}}
        if route is None:
            payload["retCode"] = UNKNOWN_PATH
            payload["retMsg"] = f"unknown path {method} {parts.path}"
        else:
            try:
                payload["result"] = route(query)
            except ApiError as exc:
                payload["retCode"], payload["retMsg"] = exc.code, exc.message
        stamp = _now_ms()
        payload["time"] = stamp
        self.server.recorder(
            RequestRecord(
                time=stamp,
                method=method,
                path=parts.path,
                query=query,
                expected=route is not None,
                ret_code=payload["retCode"],
            )
        )
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Emulator:
    """A running emulator: its address, its request record, and how to stop it."""

    def __init__(self, server: _Server, log_path: Path | None) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
        server.recorder = self._record
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"bybit-emulator-{self.port}",
            daemon=True,
        )
        self._stopped = False
        self._thread.start()

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
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request so far, oldest first."""
        with self._lock:
            return list(self._records)

    def unexpected_requests(self) -> list[RequestRecord]:
        return [r for r in self.requests if not r["expected"]]

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
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

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
            if self._log is not None:
                self._log.write(json.dumps(record, separators=(",", ":")) + "\n")
                self._log.flush()


def start_emulator(
    port: int = 0,
    data_dir: Path | None = None,
    log_path: Path | None = None,
    *,
    candles: CandleSource | None = None,
    tiers_path: Path = DEFAULT_TIERS_PATH,
    risk_limit_symbols_per_page: int = SYMBOLS_PER_PAGE,
) -> Emulator:
    """Serve the emulator on 127.0.0.1:`port` (0 picks a free port) in a daemon thread.

    `data_dir` holds Freqtrade futures feather files served in historical mode; pass `candles`
    instead for another mode (e.g. `CandleSource.wall_clock(dir)`). Without either, the market
    metadata endpoints work and candle endpoints answer empty lists. Raises OSError if the port is
    taken.
    """
    if data_dir is not None and candles is not None:
        raise ValueError("pass data_dir or candles, not both")
    if data_dir is not None:
        candles = CandleSource.historical(Path(data_dir))
    app = BybitApp(candles, tiers_path, risk_limit_symbols_per_page)
    server = _Server((HOST, port), _Handler)
    server.app = app
    return Emulator(server, Path(log_path) if log_path else None)
