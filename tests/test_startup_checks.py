"""Startup refuses a REST API / FreqUI guarded by an empty, short or example secret."""

from __future__ import annotations

from typing import Any

import pytest
from freqtrade.exceptions import OperationalException

from tests.factories import strategy_class

STRONG_JWT = "k3Yq9pZ_ZcW1y8sVv0mA5rT2uXn4bLdE6fGhJ7iK"


def strategy(runmode: str, api: dict[str, Any]) -> Any:
    GeminiOracleStrategy = strategy_class()
    return GeminiOracleStrategy({"runmode": runmode, "stake_currency": "USDT", "api_server": api})


@pytest.mark.parametrize(
    ("password", "jwt", "named"),
    [
        ("", STRONG_JWT, "password"),
        ("SuperSecurePassword", STRONG_JWT, "password"),
        ("short", STRONG_JWT, "password"),
        ("a-good-long-password", "somethingrandom", "jwt_secret_key"),
        ("a-good-long-password", "too-short-secret", "jwt_secret_key"),
    ],
)
def test_weak_api_credentials_stop_a_live_bot(password: str, jwt: str, named: str) -> None:
    api = {"enabled": True, "password": password, "jwt_secret_key": jwt}
    with pytest.raises(OperationalException, match=f"api_server is enabled .*{named}"):
        strategy("dry_run", api)


def test_strong_credentials_or_a_disabled_api_start() -> None:
    strategy(
        "live", {"enabled": True, "password": "a-good-long-password", "jwt_secret_key": STRONG_JWT}
    )
    strategy("dry_run", {"enabled": False, "password": ""})
    strategy("backtest", {"enabled": True, "password": ""})  # no API in a backtest
