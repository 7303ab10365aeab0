"""Bybit's error answer and the retCodes the emulator uses (as ccxt's bybit class maps them)."""

from __future__ import annotations

PARAM_ERROR = 10001  # ccxt: BadRequest
SYSTEM_ERROR = 10016  # ccxt: ExchangeError
UNKNOWN_PATH = 10404
ORDER_NOT_FOUND = 110001  # ccxt: OrderNotFound
INSUFFICIENT_BALANCE = 110007  # ccxt: InsufficientFunds ("ab not enough for new order")
RISK_LIMIT_LEVERAGE = 110013  # ccxt: BadRequest ("Due to risk limit, cannot set leverage")
REDUCE_ONLY_RULE = 110017  # ccxt: InvalidOrder
POSITION_MODE_HAS_POSITION = 110024  # ccxt: BadRequest
MARGIN_MODE_NOT_MODIFIED = 110026  # ccxt: MarginModeAlreadySet
POSITION_MODE_HAS_ORDERS = 110028  # ccxt: BadRequest
LEVERAGE_NOT_MODIFIED = 110043  # ccxt: BadRequest
DUPLICATE_LINK_ID = 110072  # ccxt: InvalidOrder
EXPECT_RISING = 110092  # ccxt: InvalidOrder
EXPECT_FALLING = 110093  # ccxt: InvalidOrder
MIN_NOTIONAL = 110094  # ccxt: InvalidOrder
UTA_FORBIDDEN = 100028  # ccxt: PermissionDenied (classic-account endpoint on a unified account)


class ApiError(Exception):
    """A Bybit-style error answer (HTTP 200 with a non-zero retCode, as Bybit does)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
