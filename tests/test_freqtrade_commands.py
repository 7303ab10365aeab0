"""Freqtrade's other commands with the shipped config: hyperopt (parallel) and plot-dataframe.

Each runs the real CLI as a subprocess against the Bybit emulator on a short range.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bybit_emulator import Emulator
from llm_oracle.ledger import ClosedTrade
from llm_oracle.models import Side
from tests.factories import ROOT, strategy_class
from tests.freqtrade_run import offline_overlay, run_freqtrade

SHORT_RANGE = "20250605-20250607"


@pytest.mark.integration
def test_hyperopt_with_default_parallelism_runs_three_epochs(
    emulator: Emulator, sample_datadir: Path, tmp_path: Path
) -> None:
    """The strategy pickles into joblib's workers; each reopens the oracle on first use."""
    overlay = offline_overlay(
        emulator.url, llm_oracle={"journal_path": str(tmp_path / "journal.sqlite")}
    )
    params_file = ROOT / "strategies" / "GeminiOracleStrategy.json"
    assert not params_file.exists()
    run = run_freqtrade(
        "hyperopt",
        [
            "--hyperopt-loss",
            "SharpeHyperOptLoss",
            "--spaces",
            "buy",
            "-e",
            "3",
            "--timerange",
            SHORT_RANGE,
            "--disable-param-export",  # a params file would silently change later runs
        ],
        workdir=tmp_path,
        overlay=overlay,
        datadir=sample_datadir,
    )
    assert run.returncode == 0, run.output[-4000:]
    assert "Effective number of parallel workers used: 2" in run.output
    [results] = (run.userdir / "hyperopt_results").glob("*.fthypt")
    epochs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    assert len(epochs) == 3
    assert all(e["results_metrics"]["total_trades"] > 0 for e in epochs)
    assert not params_file.exists()


@pytest.mark.integration
def test_plot_dataframe_writes_the_oracle_columns(
    emulator: Emulator, sample_datadir: Path, tmp_path: Path
) -> None:
    overlay = offline_overlay(
        emulator.url, llm_oracle={"journal_path": str(tmp_path / "journal.sqlite")}
    )
    common = {"workdir": tmp_path, "overlay": overlay, "datadir": sample_datadir}
    backtest = run_freqtrade(
        "backtesting", ["--timerange", SHORT_RANGE, "--export", "trades"], **common
    )
    assert backtest.returncode == 0, backtest.output[-3000:]
    run = run_freqtrade(
        "plot-dataframe", ["--timerange", SHORT_RANGE, "-p", "BTC/USDT:USDT"], **common
    )
    assert run.returncode == 0, run.output[-3000:]
    [html] = (run.userdir / "plot").glob("*BTC_USDT_USDT-3m.html")
    text = html.read_text()
    assert "oracle_confidence" in text and "ema200" in text


def test_a_new_backtest_run_starts_with_a_clean_ledger() -> None:
    """Hyperopt with one job reuses the strategy: an epoch must not inherit the last one's."""
    GeminiOracleStrategy = strategy_class()
    strategy = GeminiOracleStrategy({"runmode": "hyperopt", "stake_currency": "USDT"})
    start = datetime(2025, 6, 5, tzinfo=UTC)
    strategy._start_run_if_new(start)
    strategy._start_run_if_new(start + timedelta(hours=5))
    exit_ = ClosedTrade(
        pair="BTC/USDT:USDT",
        side=Side.LONG,
        close_time=start + timedelta(hours=5),
        exit_price=100.0,
        profit=-10.0,
        exit_reason="stop_loss",
    )
    strategy._ledger.record_exit(exit_, 10_000)
    strategy._trade_risk[1] = None
    assert strategy._ledger.last_exits
    strategy._start_run_if_new(start)  # the clock jumps back: the next epoch
    assert strategy._ledger.last_exits == {} and strategy._trade_risk == {}


@pytest.mark.parametrize(
    "block",
    [
        {"backend": "gemini"},
        {"backend": "replay", "replay": {"source": "gemini", "on_miss": "call:gemini"}},
    ],
)
def test_hyperopt_never_makes_a_paid_call(block: dict, tmp_path: Path) -> None:
    GeminiOracleStrategy = strategy_class()
    config = {
        "runmode": "hyperopt",
        "stake_currency": "USDT",
        "user_data_dir": tmp_path,
        "llm_oracle": {**block, "journal_path": str(tmp_path / "j.sqlite")},
    }
    oracle = GeminiOracleStrategy(config)._ensure_oracle()
    assert oracle is not None
    try:
        assert oracle.config.backend.value == "replay"
        assert oracle.config.replay.source == "gemini" and oracle.config.replay.on_miss == "hold"
    finally:
        oracle.close()
