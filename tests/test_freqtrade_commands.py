"""Every Freqtrade command a user runs, with the shipped config and the real CLI.

hyperopt (parallel), plot-dataframe, plot-profit, backtesting-analysis, list-strategies,
show-trades and download-data, each as a subprocess against the Bybit emulator on a short range.
Backtesting, lookahead- and recursive-analysis are in test_backtest_integration.py, trade in the
live and dry-run tests.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import joblib
import pandas as pd
import pytest

from bybit_emulator import Emulator, start_emulator
from llm_oracle.ledger import ClosedTrade
from llm_oracle.models import Side
from tests.factories import ROOT, strategy_class
from tests.freqtrade_run import FreqtradeRun, offline_overlay, run_freqtrade

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
    # Hyperopt's default (-j -1) is one worker per CPU joblib sees; more than one proves the
    # strategy crossed into worker processes (a pickling failure would stop the run).
    [workers] = re.findall(r"Effective number of parallel workers used: (\d+)", run.output)
    assert int(workers) == joblib.cpu_count() and int(workers) >= 2, (workers, joblib.cpu_count())
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


# ---- commands over one exported backtest --------------------------------------------------------


@pytest.fixture(scope="module")
def signals_backtest(
    emulator: Emulator, sample_datadir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[FreqtradeRun, dict]:
    """One backtest exported with its signals, as the runbook has it, shared by the analyses."""
    workdir = tmp_path_factory.mktemp("signals")
    overlay = offline_overlay(
        emulator.url, llm_oracle={"journal_path": str(workdir / "journal.sqlite")}
    )
    common = {"workdir": workdir, "overlay": overlay, "datadir": sample_datadir}
    args = ["--timerange", SHORT_RANGE, "--timeframe-detail", "1m", "--export", "signals"]
    run = run_freqtrade("backtesting", args, **common)
    assert run.returncode == 0, run.output[-3000:]
    assert run.result()["trades"], "the range must hold trades for the analyses to show"
    return run, common


def test_backtesting_analysis_groups_trades_by_entry_tag(signals_backtest: tuple) -> None:
    backtest, common = signals_backtest
    trades = backtest.result()["trades"]
    args = ["--analysis-groups", "0", "2", "--indicator-list", "oracle_confidence"]
    run = run_freqtrade("backtesting-analysis", args, **common)
    assert run.returncode == 0, run.output[-3000:]
    # Group 0: one row per entry tag with its number of entries, as many as the backtest made.
    expected = Counter(t["enter_tag"] for t in trades)
    rows = {}
    for line in run.output.splitlines():
        cells = [c.strip() for c in line.replace("┃", "|").replace("│", "|").split("|")]
        cells = [c for c in cells if c]
        if cells and cells[0] in expected and len(cells) >= 2 and cells[1].isdigit():
            rows.setdefault(cells[0], int(cells[1]))
    assert rows == dict(expected), run.output[-3000:]
    # Group 2: entry tag by exit reason, every exit reason of the backtest appears.
    for reason in {t["exit_reason"] for t in trades}:
        assert reason in run.output, (reason, run.output[-3000:])
    # The exported signal candles carry the oracle's columns: its confidence per trade.
    assert "Indicators:" in run.output and "oracle_confidence" in run.output


def test_plot_profit_writes_its_html(signals_backtest: tuple) -> None:
    backtest, common = signals_backtest
    pairs = sorted({t["pair"] for t in backtest.result()["trades"]})
    run = run_freqtrade("plot-profit", ["--timerange", SHORT_RANGE], **common)
    assert run.returncode == 0, run.output[-3000:]
    html = (backtest.userdir / "plot" / "freqtrade-profit-plot.html").read_text()
    assert "Combined Profit" in html and "Profit per pair" in html
    for pair in pairs:  # one profit line per traded pair (plotly escapes the slash)
        assert '"name":"Profit ' + pair.replace("/", "\\u002f") + '"' in html, pair


# ---- commands on their own ------------------------------------------------------------------


@pytest.mark.integration
def test_list_strategies_loads_the_strategy(
    emulator: Emulator, sample_datadir: Path, tmp_path: Path
) -> None:
    run = run_freqtrade(
        "list-strategies",
        [],
        workdir=tmp_path,
        overlay=offline_overlay(emulator.url),
        datadir=sample_datadir,
    )
    assert run.returncode == 0, run.output[-3000:]
    [row] = [line for line in run.output.splitlines() if "GeminiOracleStrategy" in line]
    assert "OK" in row and "GeminiOracleStrategy.py" in row, row


SEEDED = [
    {
        "pair": "BTC/USDT:USDT",
        "open_date": "2025-06-05T10:00:00+00:00",
        "close_date": "2025-06-05T11:30:00+00:00",
        "stake_amount": 1000.0,
        "amount": 0.01,
        "open_rate": 100000.0,
        "close_rate": 101000.0,
        "profit": 8.9,
        "exit_reason": "roi",
    },
    {
        "pair": "ETH/USDT:USDT",
        "open_date": "2025-06-05T12:00:00+00:00",
        "close_date": "2025-06-05T12:21:00+00:00",
        "stake_amount": 500.0,
        "amount": 0.2,
        "open_rate": 2500.0,
        "close_rate": 2480.0,
        "profit": -4.55,
        "exit_reason": "stop_loss",
    },
]


@pytest.mark.integration
def test_show_trades_prints_the_database_trades(
    emulator: Emulator, sample_datadir: Path, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'trades.sqlite'}"
    seed = subprocess.run(
        [sys.executable, "-m", "tests.seed_trades", db_url, json.dumps(SEEDED)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seed.returncode == 0, seed.stderr[-3000:]
    common = {"workdir": tmp_path, "overlay": offline_overlay(emulator.url)}
    run = run_freqtrade(
        "show-trades", ["--db-url", db_url, "--print-json"], datadir=sample_datadir, **common
    )
    assert run.returncode == 0, run.output[-3000:]
    start = run.output.index("[\n")  # stdout (the JSON) comes before the log
    shown, _ = json.JSONDecoder().raw_decode(run.output[start:])
    assert [(t["pair"], t["exit_reason"], t["profit_abs"]) for t in shown] == [
        (s["pair"], s["exit_reason"], s["profit"]) for s in SEEDED
    ]
    table = run_freqtrade("show-trades", ["--db-url", db_url], datadir=sample_datadir, **common)
    assert table.returncode == 0, table.output[-3000:]
    listed = [line for line in table.output.splitlines() if line.startswith("Trade(id=")]
    assert [line.split(",")[1].strip() for line in listed] == [f"pair={s['pair']}" for s in SEEDED]


# ---- download-data through the offline overlay ----------------------------------------------

DOWNLOAD_RANGE = "20250610-20250611"


@pytest.fixture
def candle_emulator(sample_datadir: Path, tmp_path: Path) -> Iterator[Emulator]:
    """The emulator serving the shipped sample's candles, mark candles and funding rates."""
    with start_emulator(
        port=0, data_dir=sample_datadir / "futures", log_path=tmp_path / "emu.jsonl"
    ) as emu:
        yield emu
        assert emu.unexpected_requests() == []


def _in_range(frame: pd.DataFrame) -> pd.DataFrame:
    start, end = (pd.Timestamp(d, tz="UTC") for d in DOWNLOAD_RANGE.split("-"))
    frame = frame[(frame["date"] >= start) & (frame["date"] < end)]
    return frame.reset_index(drop=True)


@pytest.mark.integration
def test_download_data_writes_the_exchange_candles(
    candle_emulator: Emulator, sample_datadir: Path, tmp_path: Path
) -> None:
    """The runbook's download command, offline: 3m, 1m, mark and funding as Bybit serves them.

    No --candle-types: the futures default is the given timeframes' trade candles plus mark and
    funding at Bybit's 1h, what backtests read (`--candle-types mark` would fetch 3m and 1m mark).
    """
    target = tmp_path / "downloaded"
    run = run_freqtrade(
        "download-data",
        [
            "--pairs",
            "BTC/USDT:USDT",
            "--timeframes",
            "3m",
            "1m",
            "--timerange",
            DOWNLOAD_RANGE,
            "--trading-mode",
            "futures",
        ],
        workdir=tmp_path,
        overlay=offline_overlay(candle_emulator.url),
        datadir=target,
    )
    assert run.returncode == 0, run.output[-3000:]
    written = sorted(p.name for p in (target / "futures").glob("*.feather"))
    assert written == [
        "BTC_USDT_USDT-1h-funding_rate.feather",
        "BTC_USDT_USDT-1h-mark.feather",
        "BTC_USDT_USDT-1m-futures.feather",
        "BTC_USDT_USDT-3m-futures.feather",
    ]
    source = sample_datadir / "futures"
    prices = ["open", "high", "low", "close"]
    for name, got_columns, want_columns, rows in (
        ("BTC_USDT_USDT-3m-futures.feather", prices, prices, 480),
        ("BTC_USDT_USDT-1m-futures.feather", prices, prices, 1440),
        ("BTC_USDT_USDT-1h-mark.feather", prices, prices, 24),
        # Freqtrade 2026.9 stores the rate as `funding_rate`; the shipped file (older) as `open`.
        ("BTC_USDT_USDT-1h-funding_rate.feather", ["funding_rate"], ["open"], 3),
    ):
        got = _in_range(pd.read_feather(target / "futures" / name))
        want = _in_range(pd.read_feather(source / name))
        assert len(got) == len(want) == rows, (name, len(got), len(want))
        assert (got["date"] == want["date"]).all(), name
        assert (got[got_columns].to_numpy() == want[want_columns].to_numpy()).all(), name
        if name.endswith("-futures.feather"):
            # Bybit sends volume rounded to the lot step (0.001 BTC).
            assert (got["volume"] - want["volume"]).abs().max() <= 0.0005 + 1e-9, name


def test_a_hyperopt_parameter_file_is_announced_at_start(tmp_path: Path, caplog) -> None:
    """Freqtrade applies `<strategy>.json` at INFO only; the strategy warns that it is in force."""
    GeminiOracleStrategy = strategy_class()
    strategy = GeminiOracleStrategy({"runmode": "backtest", "stake_currency": "USDT"})
    source = tmp_path / "GeminiOracleStrategy.py"
    strategy.__file__ = str(source)
    with caplog.at_level(logging.WARNING):
        strategy._warn_hyperopt_params()
    assert caplog.records == []  # no file: nothing to say
    source.with_suffix(".json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        strategy._warn_hyperopt_params()
    [record] = caplog.records
    assert str(source.with_suffix(".json")) in record.getMessage()
    assert "overrides the strategy's shipped parameters" in record.getMessage()
