"""Money-rule callbacks fail closed: an error means no entry and the hard stop, never "yes".

Freqtrade answers an exception in `confirm_trade_entry` with True; the strategy must not let
that happen. Unit tests call the callbacks of a real strategy instance with a broken part; the
integration test runs the real `freqtrade backtesting` with a callback that raises.
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from datetime import UTC, datetime
from inspect import getfullargspec
from pathlib import Path
from typing import Any

import pytest
from freqtrade.exceptions import OperationalException

from bybit_emulator import Emulator
from tests.factories import ROOT
from tests.factories import strategy_class as load_strategy_class
from tests.freqtrade_run import offline_overlay, run_freqtrade

NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def strategy_class() -> type:
    return load_strategy_class()


class Broken:
    """Stands in for any part (wallets, memory) that raises when used."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"injected failure: {name}")


def make(strategy_class: type, **config: Any) -> Any:
    return strategy_class({"runmode": "backtest", "stake_currency": "USDT", **config})


def test_entry_gate_sizing_and_leverage_refuse_on_error(strategy_class: type, caplog) -> None:
    strategy = make(strategy_class)
    strategy.wallets = Broken()
    strategy._memory = Broken()
    caplog.set_level(logging.ERROR)
    args = ("BTC/USDT:USDT", "limit", 1.0, 100.0, "GTC", NOW, "oracle_long", "long")
    assert strategy.confirm_trade_entry(*args) is False
    stake = strategy.custom_stake_amount(
        "BTC/USDT:USDT", NOW, 100.0, 500.0, 5.0, 1000.0, 2.0, "oracle_long", "long"
    )
    assert stake == 0.0
    lev = strategy.leverage("BTC/USDT:USDT", NOW, 100.0, 1.0, 10.0, "oracle_long", "long")
    assert lev == 1.0
    messages = [r.getMessage() for r in caplog.records]
    assert any("confirm_trade_entry failed; no entry" in m for m in messages)
    assert any("custom_stake_amount failed; no entry" in m for m in messages)
    assert any("leverage failed; using 1x leverage" in m for m in messages)
    assert strategy._refusals["callback error"] == 3


def test_stop_and_exit_callbacks_keep_the_hard_stop_on_error(strategy_class: type) -> None:
    strategy = make(strategy_class)
    trade = Broken()  # every attribute read raises
    assert strategy.custom_stoploss("BTC/USDT:USDT", trade, NOW, 100.0, 0.01, False) is None
    assert strategy.custom_roi("BTC/USDT:USDT", trade, NOW, 30, None, "long") is None
    # None keeps the stop Freqtrade has, which is never looser than the hard stoploss.
    # The guard keeps the signature Freqtrade inspects (it skips after-fill calls otherwise).
    assert "after_fill" in getfullargspec(strategy.custom_stoploss).args


@pytest.mark.parametrize(
    ("rules", "needle"),
    [
        (
            {"reentry_window_hours": 1e12},
            "money_rules.reentry_window_hours: 1000000000000.0 is out of bounds; allowed: [0, 720]",
        ),
        ({"max_leverage": 10}, "money_rules.max_leverage: 10 is out of bounds; allowed: [1, 3]"),
        ({"fee_multiple": 0}, "money_rules.fee_multiple: 0 is out of bounds; allowed: [1, 50]"),
        (
            {"protections": {"stoploss_pause_hours": 1e9}},
            "protections.stoploss_pause_hours: 1000000000.0 is out of bounds; allowed: (0, 720]",
        ),
        ({"leverage_tiers": [[0.5, 20.0], [0.0, 1.0]]}, "money_rules.leverage_tiers.0.1"),
        ({"oracle_take_profit": "no"}, "money_rules.oracle_take_profit"),
        ({"max_open_risk": True}, "money_rules.max_open_risk"),
    ],
)
def test_out_of_bound_money_rules_stop_startup_naming_the_key(
    strategy_class: type, rules: dict[str, Any], needle: str
) -> None:
    with pytest.raises(OperationalException) as err:
        make(strategy_class, money_rules=rules)
    assert needle in str(err.value)


def test_a_hard_stop_outside_its_bounds_stops_startup(strategy_class: type) -> None:
    strategy = make(strategy_class)
    strategy.stoploss = -0.9
    with pytest.raises(OperationalException, match=r"stoploss: -0.9 is outside the allowed range"):
        strategy.bot_start()


BROKEN_STRATEGY = """
from GeminiOracleStrategy import GeminiOracleStrategy


class BrokenRiskStrategy(GeminiOracleStrategy):
    def _open_risk(self, round_trip_fee):
        raise RuntimeError("injected open-risk failure")
"""


@pytest.mark.integration
def test_a_raising_entry_gate_enters_nothing_in_a_real_backtest(
    emulator: Emulator, sample_datadir: Path, tmp_path: Path
) -> None:
    strategies = tmp_path / "strategies"
    strategies.mkdir()
    shutil.copy(ROOT / "strategies" / "GeminiOracleStrategy.py", strategies)
    (strategies / "BrokenRiskStrategy.py").write_text(BROKEN_STRATEGY)
    overlay = offline_overlay(
        emulator.url,
        llm_oracle={"journal_path": str(tmp_path / "j.sqlite")},
        strategy="BrokenRiskStrategy",
        strategy_path=str(strategies),
    )
    run = run_freqtrade(
        "backtesting",
        ["--cache", "none", "--timerange", "20250606-20250608", "--strategy-path", str(strategies)],
        workdir=tmp_path,
        overlay=overlay,
        datadir=sample_datadir,
    )
    assert run.returncode == 0, run.output[-3000:]
    assert "confirm_trade_entry failed; no entry" in run.output
    results = run.userdir / "backtest_results"
    last = json.loads((results / ".last_result.json").read_text())["latest_backtest"]
    with zipfile.ZipFile(results / last) as archive:
        data = json.loads(archive.read(Path(last).with_suffix(".json").name))
    assert data["strategy"]["BrokenRiskStrategy"]["total_trades"] == 0
    assert "callback error" in run.output  # counted in the summary


def live_strategy(strategy_class: type) -> Any:
    strategy = make(strategy_class, runmode="dry_run")
    strategy.wallets = type("Wallets", (), {"get_total_stake_amount": lambda self: 10_000.0})()
    return strategy


def closed_trade(**fields: Any) -> Any:
    from types import SimpleNamespace

    base = {
        "id": 3,
        "pair": "BTC/USDT:USDT",
        "is_short": False,
        "is_open": False,
        "entry_side": "buy",
        "amount": 0.01,
        "close_rate": 99_000.0,
        "close_profit_abs": -40.0,
        "exit_reason": "stoploss_on_exchange",
        "close_date": NOW,
        "close_date_utc": NOW,
    }
    return SimpleNamespace(**{**base, **fields})


def test_live_exit_fills_reported_twice_count_once(strategy_class: type) -> None:
    from types import SimpleNamespace

    strategy = live_strategy(strategy_class)
    order = SimpleNamespace(ft_order_side="stoploss", safe_filled=0.01, safe_price=99_000.0)
    trade = closed_trade()
    strategy.order_filled("BTC/USDT:USDT", trade, order, NOW)
    strategy.order_filled("BTC/USDT:USDT", trade, order, NOW)  # Freqtrade's fee retry
    assert strategy._ledger.day_pnl == -40.0 and strategy._ledger.stop_streak == 1
    # A partial exit leaves the trade open: nothing is accounted until it closes.
    strategy.order_filled("ETH/USDT:USDT", closed_trade(id=4, is_open=True), order, NOW)
    assert strategy._ledger.day_pnl == -40.0


def test_an_after_fill_call_never_loosens_a_trailed_stop(strategy_class: type) -> None:
    from types import SimpleNamespace

    from GeminiOracleStrategy import _TradeRisk  # the strategy module is imported by the fixture

    strategy = make(strategy_class)
    trade = SimpleNamespace(
        id=5,
        pair="BTC/USDT:USDT",
        is_short=False,
        fee_open=0.0005,
        fee_close=0.0005,
        leverage=1.0,
        liquidation_price=None,
        open_rate=100.0,
        stop_loss=100.15,  # trailed above the entry already
    )
    strategy._trade_risk[5] = _TradeRisk(stop=99.0, atr=0.0, take_profit=None, signal_close=100.0)
    later = strategy.custom_stoploss("BTC/USDT:USDT", trade, NOW, 100.25, 0.002, after_fill=False)
    refill = strategy.custom_stoploss("BTC/USDT:USDT", trade, NOW, 100.25, 0.002, after_fill=True)
    assert later == pytest.approx(1 - 99.0 / 100.25)  # the initial stop (Freqtrade keeps the max)
    assert refill == pytest.approx(1 - 100.15 / 100.25)  # after a fill: not back to 99


def test_a_failing_exit_fill_rebuilds_the_ledger_live(strategy_class: type, monkeypatch) -> None:
    """Freqtrade swallows an error in order_filled: the exit must still reach the ledger."""
    from types import SimpleNamespace

    import GeminiOracleStrategy as module

    strategy = live_strategy(strategy_class)
    losing = [closed_trade(id=i, close_date=NOW, close_date_utc=NOW) for i in (1, 2, 3)]
    applied: list[Any] = []
    monkeypatch.setattr(module, "_lock_all", applied.append)
    monkeypatch.setattr(module.Trade, "get_trades_proxy", staticmethod(lambda **kw: losing))

    def broken_bookkeeping(*args: Any) -> None:
        raise RuntimeError("injected exit bookkeeping failure")

    strategy._on_exit = broken_bookkeeping
    order = SimpleNamespace(ft_order_side="stoploss", safe_filled=0.01, safe_price=99_000.0)
    strategy.order_filled("BTC/USDT:USDT", losing[-1], order, NOW)
    # Three losing stops in the database: the rebuilt ledger demands the streak's pause.
    assert [lock.reason for lock in applied] == ["3 consecutive stop-losses: pause"]
    assert strategy._refusals["callback error"] == 1


def test_a_failing_exit_fill_without_a_ledger_pauses_every_entry(
    strategy_class: type, monkeypatch, caplog
) -> None:
    from types import SimpleNamespace

    import GeminiOracleStrategy as module

    strategy = make(strategy_class)  # a backtest: nothing to rebuild from
    applied: list[Any] = []
    monkeypatch.setattr(module, "_lock_all", applied.append)
    strategy._ledger = Broken()
    caplog.set_level(logging.ERROR)
    order = SimpleNamespace(ft_order_side="stoploss", safe_filled=0.01, safe_price=99_000.0)
    strategy.order_filled("BTC/USDT:USDT", closed_trade(), order, NOW)
    (lock,) = applied
    assert lock.start == NOW and lock.until == datetime(2025, 6, 11, tzinfo=UTC)
    assert "risk ledger error" in lock.reason
    assert any("order_filled failed" in r.getMessage() for r in caplog.records)
