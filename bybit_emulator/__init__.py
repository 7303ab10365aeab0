"""Offline Bybit v5 REST emulator with pinned market metadata and an emulated private API.

Point ccxt (and so Freqtrade) at it through `exchange.ccxt_config.urls.api` to run backtests,
dry-runs and (with accounts configured) live trading without the network, with market data that
never changes under you.
"""

from .accounts import AccountConfig, parse_account_spec, redact_key, sign, signed_headers
from .candles import Candle, CandleSource, UnsupportedInterval
from .engine import Prices, TradingEngine
from .errors import ApiError
from .instruments import SYMBOLS, instrument, linear_instruments
from .server import BybitApp, Emulator, RequestRecord, start_emulator

__all__ = [
    "SYMBOLS",
    "AccountConfig",
    "ApiError",
    "BybitApp",
    "Candle",
    "CandleSource",
    "Emulator",
    "Prices",
    "RequestRecord",
    "TradingEngine",
    "UnsupportedInterval",
    "instrument",
    "linear_instruments",
    "parse_account_spec",
    "redact_key",
    "sign",
    "signed_headers",
    "start_emulator",
]
