"""Startup checks on Freqtrade's own config keys, as pure functions.

The strategy runs them at startup and `llm-oracle check-config` runs the very same functions, so
the two can never disagree about what a bot refuses. Nothing here imports Freqtrade.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from llm_oracle.config import OracleConfigError

# The hard stop is a ratio on margin (Freqtrade's `stoploss`). Looser than -50% is no stop worth
# the name; tighter than -0.5% is inside a 3m candle's noise plus the round-trip fee.
HARD_STOP_BOUNDS = (-0.5, -0.005)

# Passwords and secrets that appear in Freqtrade's and this project's examples.
EXAMPLE_SECRETS = frozenset(
    {
        "",
        "freqtrader",
        "supersecretpassword",
        "supersecurepassword",
        "change-me",
        "changeme",
        "somethingrandom",
        "password",
        "secret",
    }
)
MIN_PASSWORD = 8
MIN_JWT_SECRET = 32

_ENV_PREFIX = "FREQTRADE__"
# Freqtrade keeps these as strings: a numeric password or chat id must not become an int.
_NO_CONVERT = {"CHAT_ID", "PASSWORD"}


def check_hard_stoploss(stoploss: Any) -> float:
    """The hard stop as a float, or OracleConfigError naming the key and its allowed range."""
    low, high = HARD_STOP_BOUNDS
    # bool is an int to Python, but true is no stop; Freqtrade's config schema refuses it too.
    if isinstance(stoploss, bool) or not isinstance(stoploss, int | float):
        raise OracleConfigError(
            f"stoploss: {stoploss!r} is not a number; allowed range [{low}, {high}]"
        )
    if not low <= stoploss <= high:
        raise OracleConfigError(
            f"stoploss: {stoploss} is outside the allowed range [{low}, {high}] "
            "(risk on margin; every trade keeps this hard stop)"
        )
    return float(stoploss)


def check_api_server(api: Any) -> None:
    """Refuse a REST API / FreqUI guarded by an empty, short or example secret.

    Only a dry-run or live bot serves the API, so only they run this at startup.
    """
    if not isinstance(api, Mapping) or not api.get("enabled"):
        return
    weak = []
    password = str(api.get("password") or "")
    if password.lower() in EXAMPLE_SECRETS or len(password) < MIN_PASSWORD:
        weak.append(
            f"password (FREQTRADE__API_SERVER__PASSWORD: {MIN_PASSWORD}+ characters, "
            "not an example)"
        )
    jwt = str(api.get("jwt_secret_key") or "")
    if jwt.lower() in EXAMPLE_SECRETS or len(jwt) < MIN_JWT_SECRET:
        weak.append(
            f"jwt_secret_key (FREQTRADE__API_SERVER__JWT_SECRET_KEY: {MIN_JWT_SECRET}+ "
            "random characters)"
        )
    if weak:
        raise OracleConfigError(
            "api_server is enabled with an empty, short or example "
            + " and ".join(weak)
            + '; generate one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
        )


def freqtrade_env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The `FREQTRADE__SECTION__KEY` variables as the nested dict Freqtrade merges over the files.

    check-config must see what the bot sees: the shipped setup (.env.example, docker-compose)
    enables the API and sets its secrets only through these variables. Values are typed as
    Freqtrade types them (int, float, true/false, a JSON list, else the string).
    """
    env = os.environ if environ is None else environ
    nested: dict[str, Any] = {}
    for name, value in sorted(env.items()):
        if not name.startswith(_ENV_PREFIX):
            continue
        parts = name[len(_ENV_PREFIX) :].split("__")
        node = nested
        for part in parts[:-1]:
            child = node.get(part.lower())
            if not isinstance(child, dict):
                child = node[part.lower()] = {}
            node = child
        last = parts[-1]
        node[last.lower()] = value if last in _NO_CONVERT else _typed(value)
    return nested


def _typed(value: str) -> Any:
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    if value.lower() in ("t", "true"):
        return True
    if value.lower() in ("f", "false"):
        return False
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, list) else value
