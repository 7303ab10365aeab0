"""One check for all of it: `llm-oracle check-config` rejects exactly what startup rejects.

Startup is the real strategy as a dry-run bot loads it: Freqtrade's `StrategyResolver` (which
copies the config's `stoploss` onto the strategy), its constructor (money rules, the REST API's
secrets) and the checks `bot_start` runs first (`_check_startup`: the hard stoploss, the
llm_oracle block, then the journal). Every row of the table goes through both, and both must
name the same problem.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llm_oracle.cli import main
from llm_oracle.journal import SCHEMA_VERSION, Journal
from llm_oracle.startup_checks import freqtrade_env_overrides
from tests.factories import ROOT

STRONG_PASSWORD = "a-good-long-password"
STRONG_JWT = "k3Yq9pZ_ZcW1y8sVv0mA5rT2uXn4bLdE6fGhJ7iK"


def startup(config: dict[str, Any], userdir: Path) -> str | None:
    """What starting the strategy as a dry-run bot says: None when it starts, else the error.

    Dry run, not backtest: a dry-run bot refuses everything a backtest refuses, and weak REST
    API secrets as well (only dry-run and live serve the API).
    """
    from freqtrade.enums import RunMode
    from freqtrade.exceptions import OperationalException
    from freqtrade.resolvers import StrategyResolver

    full = {
        **config,
        "strategy": "GeminiOracleStrategy",
        "strategy_path": str(ROOT / "strategies"),
        "trading_mode": "futures",
        "margin_mode": "isolated",
        "stake_currency": "USDT",
        "user_data_dir": userdir,
        "runmode": RunMode.DRY_RUN,
    }
    try:
        strategy = StrategyResolver.load_strategy(full)
        strategy._check_startup()  # what bot_start checks before anything runs
    except OperationalException as exc:
        return str(exc)
    strategy.ft_bot_cleanup()
    return None


def check_config(
    config: dict[str, Any], userdir: Path, capsys: pytest.CaptureFixture[str]
) -> str | None:
    path = userdir / "config.json"
    path.write_text(json.dumps(config))
    code = main(["check-config", "--config", str(path), "--userdir", str(userdir)])
    out = capsys.readouterr()
    if code == 0:
        assert "config OK" in out.out
        return None
    assert code == 1 and out.err
    return out.err


# --- journal files that startup refuses --------------------------------------------------------
def _directory(path: Path) -> None:
    path.mkdir(parents=True)


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite at all" * 200)


def _foreign(path: Path) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE trades (id INTEGER)")
    conn.commit()
    conn.close()


def _newer(path: Path) -> None:
    Journal(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


def _parent_is_a_file(path: Path) -> None:
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    path.parent.write_text("a file where the journal's directory should be")


def _corrupt_page(path: Path) -> None:
    from tests.test_journal_faults import _corrupt_pages, _fill

    path.parent.mkdir(parents=True)
    _fill(path)
    _corrupt_pages(path)


JOURNALS: dict[str, Callable[[Path], None]] = {
    "directory": _directory,
    "corrupt": _corrupt,
    "foreign": _foreign,
    "newer": _newer,
    "parent_is_a_file": _parent_is_a_file,
    "corrupt_page": _corrupt_page,
}

# (config overrides, journal fault, what both must say)
BAD: list[tuple[dict[str, Any], str | None, str]] = [
    (
        {"llm_oracle": {"enabled": "no"}},
        None,
        "llm_oracle.enabled: Input should be a valid boolean",
    ),
    ({"llm_oracle": {"enabled": 0}}, None, "llm_oracle.enabled"),
    ({"llm_oracle": {"timeout_s": True}}, None, "llm_oracle.timeout_s: Input should be a valid"),
    ({"llm_oracle": {"prompt_candles": 24.5}}, None, "llm_oracle.prompt_candles"),
    ({"llm_oracle": {"prompt_candles": "24"}}, None, "llm_oracle.prompt_candles"),
    ({"llm_oracle": {"backend": "gemni"}}, None, "llm_oracle.backend: 'gemni' is not allowed"),
    ({"llm_oracle": {"jornal_path": "x"}}, None, "llm_oracle.jornal_path: unknown key"),
    ({"llm_oracle": {"exit_review": {"enabled": "yes"}}}, None, "exit_review.enabled"),
    ({"llm_oracle": {"rules": {"min_stop": "0.01"}}}, None, "llm_oracle.rules.min_stop"),
    (
        {"llm_oracle": {"gemini": {"base_url": "http://gemini.example.com"}}},
        None,
        "llm_oracle.gemini.base_url",
    ),
    ({"llm_oracle": {"gemini": {"seed": True}}}, None, "llm_oracle.gemini.seed"),
    ({"money_rules": {"max_leverage": 10}}, None, "money_rules.max_leverage"),
    ({"money_rules": {"fee_multiple": 0}}, None, "money_rules.fee_multiple"),
    ({"money_rules": {"oracle_take_profit": "no"}}, None, "money_rules.oracle_take_profit"),
    ({"stoploss": -0.9}, None, "stoploss: -0.9 is outside the allowed range [-0.5, -0.005]"),
    ({"stoploss": -0.501}, None, "stoploss: -0.501 is outside the allowed range [-0.5, -0.005]"),
    ({"stoploss": -0.004}, None, "stoploss: -0.004 is outside the allowed range [-0.5, -0.005]"),
    (
        {"api_server": {"enabled": True, "password": "", "jwt_secret_key": STRONG_JWT}},
        None,
        "example password (FREQTRADE__API_SERVER__PASSWORD: 8+ characters",
    ),
    (
        {"api_server": {"enabled": True, "password": "SuperSecurePassword"}},
        None,
        "example password (FREQTRADE__API_SERVER__PASSWORD: 8+ characters",
    ),
    (
        {"api_server": {"enabled": True, "password": "short7!", "jwt_secret_key": STRONG_JWT}},
        None,
        "password (FREQTRADE__API_SERVER__PASSWORD: 8+ characters",
    ),
    (
        {"api_server": {"enabled": True, "password": STRONG_PASSWORD, "jwt_secret_key": "x" * 31}},
        None,
        "jwt_secret_key (FREQTRADE__API_SERVER__JWT_SECRET_KEY: 32+ random characters)",
    ),
    (
        {"api_server": {"enabled": True, "password": STRONG_PASSWORD, "jwt_secret_key": "secret"}},
        None,
        "jwt_secret_key (FREQTRADE__API_SERVER__JWT_SECRET_KEY: 32+ random characters)",
    ),
    ({}, "directory", "cannot be a journal file (it is a directory)"),
    ({}, "parent_is_a_file", "cannot be a journal file (a parent is a file"),
    ({}, "corrupt", "is not a usable SQLite journal"),
    ({}, "corrupt_page", "integrity check"),
    ({}, "foreign", "not an llm_oracle journal"),
    ({}, "newer", "newer than this llm_oracle understands"),
]


def _config(overrides: dict[str, Any], journal: Path) -> dict[str, Any]:
    shipped = json.loads((ROOT / "config.json").read_text())
    oracle = {**shipped["llm_oracle"], "journal_path": str(journal)}
    oracle.update(overrides.get("llm_oracle", {}))
    money = {**shipped["money_rules"], **overrides.get("money_rules", {})}
    # Freqtrade's own keys (stoploss, api_server) as the shipped config has them, or overridden.
    shipped_api = shipped["api_server"]
    api = {**shipped_api, **overrides.get("api_server", {})}
    config = {"llm_oracle": oracle, "money_rules": money, "api_server": api}
    config.update({k: v for k, v in overrides.items() if k not in config})
    return config


@pytest.mark.parametrize(
    ("overrides", "fault", "message"), BAD, ids=[f"{m[:40]}" for _, _, m in BAD]
)
def test_check_config_rejects_what_startup_rejects(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    overrides: dict[str, Any],
    fault: str | None,
    message: str,
) -> None:
    journal = tmp_path / "oracle" / "journal.sqlite"
    if fault is not None:
        JOURNALS[fault](journal)
    before = journal.read_bytes() if journal.is_file() else None
    config = _config(overrides, journal)
    checked = check_config(config, tmp_path, capsys)
    started = startup(config, tmp_path)
    assert started is not None and message in started, started
    assert checked is not None and message in checked, checked
    if before is not None:
        assert journal.read_bytes() == before  # neither touched the file


def test_the_shipped_config_passes_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config({}, tmp_path / "oracle" / "journal.sqlite")
    assert check_config(config, tmp_path, capsys) is None
    assert not (tmp_path / "oracle").exists()  # check-config creates nothing
    assert startup(config, tmp_path) is None
    assert check_config(config, tmp_path, capsys) is None  # and the journal startup created


def test_a_disabled_oracle_opens_no_journal_in_either(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "oracle" / "journal.sqlite"
    _corrupt(journal)
    config = _config({"llm_oracle": {"enabled": False}}, journal)
    assert check_config(config, tmp_path, capsys) is None
    assert startup(config, tmp_path) is None


def test_every_problem_is_listed_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "oracle" / "journal.sqlite"
    config = _config(
        {"llm_oracle": {"enabled": True, "timeout_s": "10"}, "money_rules": {"max_leverage": 10}},
        journal,
    )
    checked = check_config(config, tmp_path, capsys)
    assert checked is not None
    assert "llm_oracle.timeout_s" in checked and "money_rules.max_leverage" in checked


def test_json_numbers_stay_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Strict, not pedantic: 10 is a valid float, null a valid optional."""
    config = _config(
        {"llm_oracle": {"timeout_s": 10, "gemini": {"temperature": None, "seed": None}}},
        tmp_path / "j.sqlite",
    )
    config["llm_oracle"]["rules"] = {"min_stop": 0.003, "max_stop": 0.03, "reward_risk": 2}
    assert check_config(config, tmp_path, capsys) is None


def test_values_at_the_bounds_and_strong_api_secrets_pass_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = {"enabled": True, "password": STRONG_PASSWORD, "jwt_secret_key": "j" * 32}
    for stoploss in (-0.5, -0.005, -0.05):
        config = _config({"stoploss": stoploss, "api_server": api}, tmp_path / "j.sqlite")
        assert check_config(config, tmp_path, capsys) is None, stoploss
        assert startup(config, tmp_path) is None, stoploss


def _freqtrade_merged(config: dict[str, Any]) -> dict[str, Any]:
    """The config as Freqtrade's own loader hands it over: environment variables win."""
    from freqtrade.configuration.environment_vars import environment_vars_to_dict
    from freqtrade.misc import deep_merge_dicts

    return deep_merge_dicts(environment_vars_to_dict(), json.loads(json.dumps(config)))


def test_secrets_from_the_environment_are_checked_as_freqtrade_merges_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped setup (.env.example) enables the API and sets its secrets only through
    FREQTRADE__API_SERVER__* variables: config.json alone has the API off."""
    config = _config({}, tmp_path / "oracle" / "journal.sqlite")
    assert config["api_server"]["enabled"] is False
    monkeypatch.setenv("FREQTRADE__API_SERVER__ENABLED", "true")
    monkeypatch.setenv("FREQTRADE__API_SERVER__PASSWORD", "")
    monkeypatch.setenv("FREQTRADE__API_SERVER__JWT_SECRET_KEY", STRONG_JWT)
    checked = check_config(config, tmp_path, capsys)
    assert checked is not None and "FREQTRADE__API_SERVER__PASSWORD: 8+ characters" in checked
    assert "jwt_secret_key (" not in checked  # the strong one from the environment counts
    started = startup(_freqtrade_merged(config), tmp_path)
    assert started is not None and "FREQTRADE__API_SERVER__PASSWORD: 8+ characters" in started

    monkeypatch.setenv("FREQTRADE__API_SERVER__PASSWORD", "12345678")  # stays a string
    monkeypatch.setenv("FREQTRADE__STOPLOSS", "-0.9")
    checked = check_config(config, tmp_path, capsys)
    assert checked is not None and "stoploss: -0.9 is outside" in checked
    assert "api_server" not in checked
    started = startup(_freqtrade_merged(config), tmp_path)
    assert started is not None and "stoploss: -0.9 is outside" in started

    monkeypatch.delenv("FREQTRADE__STOPLOSS")
    assert check_config(config, tmp_path, capsys) is None
    assert startup(_freqtrade_merged(config), tmp_path) is None


def test_environment_variables_are_typed_as_freqtrade_types_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from freqtrade.configuration.environment_vars import environment_vars_to_dict

    for name, value in {
        "FREQTRADE__API_SERVER__ENABLED": "true",
        "FREQTRADE__API_SERVER__PASSWORD": "12345678",
        "FREQTRADE__API_SERVER__LISTEN_PORT": "8081",
        "FREQTRADE__STOPLOSS": "-0.05",
        "FREQTRADE__TELEGRAM__ENABLED": "f",
        "FREQTRADE__TELEGRAM__CHAT_ID": "0123",
        "FREQTRADE__EXCHANGE__PAIR_WHITELIST": '["BTC/USDT:USDT"]',
        "FREQTRADE__API_SERVER__JWT_SECRET_KEY": '{"not": "a list"}',
        "FREQTRADE__BOT_NAME": "oracle",
    }.items():
        monkeypatch.setenv(name, value)
    ours = freqtrade_env_overrides(os.environ)
    assert ours == environment_vars_to_dict()
    assert ours["api_server"]["password"] == "12345678" and ours["stoploss"] == -0.05
