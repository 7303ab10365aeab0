"""Emulated Bybit accounts and the v5 request signature check.

An account is configured when the emulator is created: API key, secret, starting USDT balance and
maker/taker fee rates. Keys and secrets never leave this module in clear: the request log sees
`redact_key(key)` only, and signatures are never recorded.

Bybit v5 signs `timestamp + api_key + recv_window + payload` with HMAC-SHA256 (hex) where the
payload is the raw query string of a GET or the raw JSON body of a POST, and sends it with the
headers X-BAPI-API-KEY, X-BAPI-TIMESTAMP, X-BAPI-SIGN and X-BAPI-RECV-WINDOW.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from .errors import ApiError

# Bybit retCodes of the signature check (ccxt: 10002 InvalidNonce, 10003/10004 AuthenticationError).
INVALID_TIMESTAMP = 10002
INVALID_KEY = 10003
INVALID_SIGN = 10004

DEFAULT_BALANCE = Decimal("10000")
# Bybit's non-VIP USDT perpetual rates.
DEFAULT_MAKER_FEE = Decimal("0.0002")
DEFAULT_TAKER_FEE = Decimal("0.00055")
DEFAULT_RECV_WINDOW_MS = 5000
# Bybit refuses a timestamp more than 1 s ahead of its clock.
FUTURE_TOLERANCE_MS = 1000


def redact_key(key: str) -> str:
    """What the log may show of an API key: its first two characters at most."""
    return f"{key[:2]}***" if len(key) >= 8 else "***"


@dataclass(frozen=True)
class AccountConfig:
    key: str
    secret: str
    balance: Decimal = DEFAULT_BALANCE
    maker_fee: Decimal = DEFAULT_MAKER_FEE
    taker_fee: Decimal = DEFAULT_TAKER_FEE
    # A unified trading account (UTA 2.0), what Bybit opens today; False = classic account.
    unified: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if not self.key or not self.secret:
            raise ValueError("an account needs a non-empty key and secret")
        if ":" in self.key:
            raise ValueError("an API key cannot contain ':'")
        for label, value in (
            ("balance", self.balance),
            ("maker fee", self.maker_fee),
            ("taker fee", self.taker_fee),
        ):
            if not isinstance(value, Decimal) or not value.is_finite():
                raise ValueError(f"account {label} must be a finite Decimal")
        if self.balance < 0:
            raise ValueError("account balance cannot be negative")

    @property
    def label(self) -> str:
        """How logs and state dumps name the account (never the key)."""
        return self.name or redact_key(self.key)

    def __repr__(self) -> str:  # keep secrets out of tracebacks and debug output
        return (
            f"AccountConfig(key={redact_key(self.key)!r}, balance={self.balance}, "
            f"maker_fee={self.maker_fee}, taker_fee={self.taker_fee}, unified={self.unified})"
        )


def _decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{what} must be a number, got {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"{what} must be finite")
    return value


def parse_account_spec(
    spec: str,
    *,
    maker_fee: Decimal = DEFAULT_MAKER_FEE,
    taker_fee: Decimal = DEFAULT_TAKER_FEE,
    name: str = "",
) -> AccountConfig:
    """`KEY:SECRET[:BALANCE]` (the CLI's --account) into an AccountConfig."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise ValueError("an account is KEY:SECRET[:BALANCE]")
    balance = _decimal(parts[2], "balance") if len(parts) == 3 else DEFAULT_BALANCE
    return AccountConfig(
        parts[0], parts[1], balance, maker_fee=maker_fee, taker_fee=taker_fee, name=name
    )


def sign(secret: str, timestamp: str, key: str, recv_window: str, payload: str) -> str:
    """Bybit v5 HMAC signature (hex) of one request."""
    message = f"{timestamp}{key}{recv_window}{payload}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(
    account: AccountConfig,
    payload: str,
    *,
    timestamp_ms: int,
    recv_window: int = DEFAULT_RECV_WINDOW_MS,
) -> dict[str, str]:
    """The headers a client sends; for tests and tools that talk to the emulator directly."""
    ts, window = str(timestamp_ms), str(recv_window)
    return {
        "X-BAPI-API-KEY": account.key,
        "X-BAPI-TIMESTAMP": ts,
        "X-BAPI-RECV-WINDOW": window,
        "X-BAPI-SIGN": sign(account.secret, ts, account.key, window, payload),
    }


class Authenticator:
    """Checks a request's key, timestamp and signature the way Bybit does, in that order."""

    def __init__(self, accounts: list[AccountConfig]) -> None:
        self._by_key: dict[str, AccountConfig] = {}
        for account in accounts:
            if account.key in self._by_key:
                raise ValueError(f"duplicate API key {redact_key(account.key)}")
            self._by_key[account.key] = account

    def __bool__(self) -> bool:
        return bool(self._by_key)

    @property
    def accounts(self) -> list[AccountConfig]:
        return list(self._by_key.values())

    def account(self, key: str) -> AccountConfig | None:
        return self._by_key.get(key)

    def check(self, headers: Mapping[str, str], payload: str, now_ms: int) -> AccountConfig:
        """The account a request is signed for, or ApiError with Bybit's retCode."""
        key = headers.get("X-BAPI-API-KEY") or ""
        account = self._by_key.get(key)
        if account is None:
            raise ApiError(INVALID_KEY, "API key is invalid.")
        ts_text = headers.get("X-BAPI-TIMESTAMP") or ""
        window_text = headers.get("X-BAPI-RECV-WINDOW") or str(DEFAULT_RECV_WINDOW_MS)
        try:
            ts, window = int(ts_text), int(window_text)
        except ValueError:
            ts, window = -1, DEFAULT_RECV_WINDOW_MS
        if ts < 0 or window <= 0 or not now_ms - window <= ts < now_ms + FUTURE_TOLERANCE_MS:
            raise ApiError(
                INVALID_TIMESTAMP,
                "invalid request, please check your server timestamp or recv_window param. "
                f"req_timestamp[{ts_text}],server_timestamp[{now_ms}],recv_window[{window_text}]",
            )
        expected = sign(account.secret, ts_text, key, window_text, payload)
        given = headers.get("X-BAPI-SIGN") or ""
        if not hmac.compare_digest(expected, given.lower()):
            # Bybit echoes the whole origin string here, API key included, as the real one does:
            # a client that logs error bodies leaks the key, and the tests must catch that.
            raise ApiError(
                INVALID_SIGN,
                f"error sign! origin_string[{ts_text}{key}{window_text}{payload[:200]}]",
            )
        return account
