"""One check for all of it: `llm-oracle check-config` rejects exactly what startup rejects.

Startup is the real strategy: `GeminiOracleStrategy(config)` (money rules) and the oracle part
of its `bot_start` (`_ensure_oracle`: the llm_oracle block, then the journal). Every row of the
table goes through both, and both must name the same problem.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llm_oracle.cli import main
from llm_oracle.journal import SCHEMA_VERSION, Journal
from tests.factories import ROOT


def _strategy_class() -> Any:
    spec = importlib.util.spec_from_file_location(
        "GeminiOracleStrategy", ROOT / "strategies" / "GeminiOracleStrategy.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GeminiOracleStrategy


@pytest.fixture(scope="module")
def strategy_class() -> Any:
    return _strategy_class()


def startup(strategy_class: Any, config: dict[str, Any], userdir: Path) -> str | None:
    """What starting the strategy says: None when it starts, else the error message."""
    from freqtrade.enums import RunMode
    from freqtrade.exceptions import OperationalException

    full = {**config, "user_data_dir": userdir, "runmode": RunMode.BACKTEST}
    try:
        strategy = strategy_class(full)
        strategy._ensure_oracle()  # what bot_start does with the oracle
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
    return {"llm_oracle": oracle, "money_rules": money}


@pytest.mark.parametrize(
    ("overrides", "fault", "message"), BAD, ids=[f"{m[:40]}" for _, _, m in BAD]
)
def test_check_config_rejects_what_startup_rejects(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    strategy_class: Any,
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
    started = startup(strategy_class, config, tmp_path)
    assert started is not None and message in started, started
    assert checked is not None and message in checked, checked
    if before is not None:
        assert journal.read_bytes() == before  # neither touched the file


def test_the_shipped_config_passes_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], strategy_class: Any
) -> None:
    config = _config({}, tmp_path / "oracle" / "journal.sqlite")
    assert check_config(config, tmp_path, capsys) is None
    assert not (tmp_path / "oracle").exists()  # check-config creates nothing
    assert startup(strategy_class, config, tmp_path) is None
    assert check_config(config, tmp_path, capsys) is None  # and the journal startup created


def test_a_disabled_oracle_opens_no_journal_in_either(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], strategy_class: Any
) -> None:
    journal = tmp_path / "oracle" / "journal.sqlite"
    _corrupt(journal)
    config = _config({"llm_oracle": {"enabled": False}}, journal)
    assert check_config(config, tmp_path, capsys) is None
    assert startup(strategy_class, config, tmp_path) is None


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
