"""Offline Bybit v5 public-REST emulator with pinned market metadata.

Point ccxt (and so Freqtrade) at it through `exchange.ccxt_config.urls.api` to run backtests and
dry-runs without the network and with market data that never changes under you.
"""

from .candles import Candle, CandleSource, UnsupportedInterval
from .instruments import SYMBOLS, instrument, linear_instruments
from .server import BybitApp, Emulator, RequestRecord, start_emulator

__all__ = [
    "SYMBOLS",
    "BybitApp",
    "Candle",
    "CandleSource",
    "Emulator",
    "RequestRecord",
    "UnsupportedInterval",
    "instrument",
    "linear_instruments",
    "start_emulator",
]
