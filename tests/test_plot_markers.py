"""The strategy's plot_config drawn by Freqtrade's own plotting (what plot-dataframe writes).

In-process on the BTC sample with the free `rules` oracle: candidates, confirmations and vetoes
are marker traces on the price chart, confidence a marker series in the Oracle panel, one value
per candle the oracle answered; and no column of candle t changes when later candles exist.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from freqtrade.plot.plotting import generate_candlestick_graph

from llm_oracle import ui_columns
from tests.factories import DATA_DIR, strategy_class

PAIR = "BTC/USDT:USDT"
ROWS = 4000  # the 1200 startup candles and enough candidates after them


def analysed(tmp_path: Path, frame: pd.DataFrame, min_confidence: float = 0.6) -> pd.DataFrame:
    GeminiOracleStrategy = strategy_class()
    strategy = GeminiOracleStrategy(
        {
            "runmode": "backtest",
            "stake_currency": "USDT",
            "user_data_dir": tmp_path,
            "llm_oracle": {"backend": "rules", "journal_path": str(tmp_path / "j.sqlite")},
        }
    )
    strategy.dp = None  # no exchange: the strategy's default fees
    # Above the default: some of the rules oracle's answers are then vetoes.
    strategy.min_confidence.value = min_confidence
    df = strategy.populate_indicators(frame.copy(), {"pair": PAIR})
    return strategy.populate_entry_trend(df, {"pair": PAIR})


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = pd.read_feather(DATA_DIR / "BTC_USDT_USDT-3m-futures.feather")
    return frame.iloc[:ROWS].reset_index(drop=True)


def test_markers_and_confidence_are_drawn_for_every_answered_candle(
    tmp_path: Path, sample: pd.DataFrame
) -> None:
    df = analysed(tmp_path, sample, min_confidence=0.75)
    candidates = df["candidate"].to_numpy() != 0
    entries = (df["enter_long"] + df["enter_short"]).to_numpy() > 0
    asked = candidates & (np.arange(len(df)) >= 1200)
    assert entries.sum() >= 10 and (asked & ~entries).sum() >= 1  # confirmations and vetoes

    GeminiOracleStrategy = strategy_class()
    fig = generate_candlestick_graph(
        PAIR, df, plot_config=copy.deepcopy(GeminiOracleStrategy.plot_config)
    )
    traces = {t.name: t for t in fig.data}

    def drawn(name: str) -> np.ndarray:
        trace = traces[name]
        assert trace.mode == "markers", name
        return ~np.isnan(np.asarray(trace.y, dtype=float))

    assert (drawn(ui_columns.CANDIDATE) == candidates).all()
    assert (drawn(ui_columns.CONFIRMED) == entries).all()
    assert (drawn(ui_columns.VETO) == (asked & ~entries)).all()
    assert (drawn(ui_columns.CONFIDENCE) == asked).all()
    # Markers sit on the candle's close; confidence is in the Oracle panel, not on the price.
    close = df["close"].to_numpy()
    confirmed_y = np.asarray(traces[ui_columns.CONFIRMED].y, dtype=float)
    assert np.allclose(confirmed_y[entries], close[entries])
    assert traces[ui_columns.CONFIDENCE].yaxis != traces[ui_columns.CANDIDATE].yaxis


def test_no_oracle_column_of_a_candle_changes_with_later_candles(
    tmp_path: Path, sample: pd.DataFrame
) -> None:
    full = analysed(tmp_path / "full", sample)
    cut = int(np.flatnonzero(full["enter_long"] + full["enter_short"])[5])  # an entry candle
    short = analysed(tmp_path / "short", sample.iloc[: cut + 1])
    columns = ["candidate", "enter_long", "enter_short", *ui_columns.MARK_COLUMNS]
    pd.testing.assert_frame_equal(
        full.loc[:cut, columns].reset_index(drop=True), short[columns].reset_index(drop=True)
    )
