"""GeminiOracleStrategy: local pre-filter on 3m Bybit perpetuals, an LLM oracle confirms or vetoes.

This file adapts Freqtrade to `llm_oracle` and nothing more: indicators and the candidate
pre-filter are computed here, vectorised; every decision goes through `llm_oracle.Oracle`.

Pre-filter (documented in the README, thresholds hyperoptable, "buy" space):
  long  candidate: close above EMA200, MACD(6,12,9) line crosses above its signal on this candle,
                   RSI(7) inside [rsi_long_min, rsi_long_max], volume >= volume_min x its mean.
  short candidate: the mirror image (below EMA200, cross down, RSI in the short band).
An entry needs a candidate AND an oracle decision for the same side with confidence >= the
`min_confidence` parameter; `enter_tag` says which (`oracle_long`, `oracle_short`, or
`prefilter_*` when the oracle is disabled in config).
"""

from __future__ import annotations

import atexit
import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pandas_ta as pta
import talib.abstract as ta
from freqtrade.enums import RunMode
from freqtrade.exceptions import OperationalException
from freqtrade.persistence import Order, Trade
from freqtrade.strategy import (
    DecimalParameter,
    IntParameter,
    IStrategy,
    stoploss_from_absolute,
    timeframe_to_minutes,
    timeframe_to_prev_date,
)

from llm_oracle import (
    Action,
    Fees,
    Oracle,
    OracleConfigError,
    Side,
    entry_requests,
    load_config,
    open_oracle,
)

logger = logging.getLogger(__name__)

# EMA200 forgets its seed slowly: after 1200 candles e^-12 (6e-6) of it is left, far below the
# request's 0.1 bp resolution, so a backtest starting on another day produces the same keys.
STARTUP_CANDLES = 1200
_ORACLE_KEY = "oracle"  # trade custom-data key holding the entry decision
_LIVE_MEMORY = 50  # confirmed signals kept per pair in dry/live (fills happen within a candle)
_ORACLE_STOP = "oracle_stop_loss"
_ORACLE_TARGET = "oracle_take_profit"
_ORACLE_CONFIDENCE = "oracle_confidence"


class GeminiOracleStrategy(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "3m"
    can_short = True
    startup_candle_count = STARTUP_CANDLES
    process_only_new_candles = True

    # The hard floor: no trade is ever without this stop (risk on margin, Freqtrade convention).
    stoploss = -0.05
    use_custom_stoploss = True
    minimal_roi = {"0": 0.015, "60": 0.008, "180": 0.004}
    use_exit_signal = False

    rsi_long_min = IntParameter(30, 55, default=45, space="buy")
    rsi_long_max = IntParameter(60, 90, default=75, space="buy")
    rsi_short_min = IntParameter(10, 40, default=25, space="buy")
    rsi_short_max = IntParameter(45, 70, default=55, space="buy")
    volume_min = DecimalParameter(0.3, 2.0, default=0.8, decimals=2, space="buy")
    min_confidence = DecimalParameter(0.4, 0.95, default=0.6, decimals=2, space="buy")

    plot_config = {
        "main_plot": {"ema21": {"color": "orange"}, "ema200": {"color": "purple"}},
        "subplots": {
            "MACD": {"macdhist": {"type": "bar", "color": "grey"}},
            "Oracle": {_ORACLE_CONFIDENCE: {"color": "green", "type": "scatter"}},
        },
    }

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._oracle: Oracle | None = None
        self._oracle_enabled = True
        self._confirmed: dict[str, dict[datetime, dict[str, Any]]] = {}
        self._stop_prices: dict[int, float | None] = {}

    # --- lifecycle -----------------------------------------------------------------------------
    def bot_start(self, **kwargs: Any) -> None:
        self._ensure_oracle()

    def _ensure_oracle(self) -> Oracle | None:
        if self._oracle is not None or not self._oracle_enabled:
            return self._oracle
        try:
            cfg = load_config(self.config.get("llm_oracle"))
        except OracleConfigError as exc:
            raise OperationalException(str(exc)) from None
        self._oracle_enabled = cfg.enabled
        if not cfg.enabled:
            logger.info("llm_oracle disabled: entries follow the pre-filter alone")
            return None
        try:
            self._oracle = open_oracle(cfg, self.config["user_data_dir"])
        except Exception as exc:  # journal errors carry a full explanation
            raise OperationalException(f"llm_oracle: {exc}") from None
        logger.info(
            "llm_oracle: backend %s (%s), journal %s",
            cfg.backend.value,
            self._oracle.backend.identity.model,
            self._oracle.journal.path,
        )
        _register_summary(self._oracle)
        return self._oracle

    def bot_cleanup(self) -> None:
        if self._oracle is not None:
            logger.info(self._oracle.stats.summary())

    @property
    def _live(self) -> bool:
        return self.config.get("runmode") in (RunMode.LIVE, RunMode.DRY_RUN)

    # --- indicators and candidates -----------------------------------------------------------
    def populate_indicators(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        dataframe["ema9"] = ta.EMA(dataframe, timeperiod=9)
        dataframe["ema21"] = ta.EMA(dataframe, timeperiod=21)
        dataframe["ema200"] = ta.EMA(dataframe, timeperiod=200)
        macd = ta.MACD(dataframe, fastperiod=6, slowperiod=12, signalperiod=9)
        dataframe["macd"] = macd["macd"]
        dataframe["macdsignal"] = macd["macdsignal"]
        dataframe["macdhist"] = macd["macdhist"]
        dataframe["rsi"] = ta.RSI(dataframe, timeperiod=7)
        dataframe["atr"] = ta.ATR(dataframe, timeperiod=14)
        dataframe["volume_ratio"] = dataframe["volume"] / pta.sma(dataframe["volume"], length=20)
        return dataframe

    def _candidates(self, df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        hist, prev_hist = df["macdhist"], df["macdhist"].shift(1)
        volume_ok = df["volume_ratio"] >= self.volume_min.value
        long_c = (
            (df["close"] > df["ema200"])
            & (hist > 0)
            & (prev_hist <= 0)
            & df["rsi"].between(self.rsi_long_min.value, self.rsi_long_max.value)
            & volume_ok
            & (df["volume"] > 0)
        )
        short_c = (
            (df["close"] < df["ema200"])
            & (hist < 0)
            & (prev_hist >= 0)
            & df["rsi"].between(self.rsi_short_min.value, self.rsi_short_max.value)
            & volume_ok
            & (df["volume"] > 0)
        )
        return long_c.fillna(False), short_c.fillna(False)

    # --- entries -------------------------------------------------------------------------------
    def populate_entry_trend(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        long_c, short_c = self._candidates(dataframe)
        dataframe["candidate"] = np.select([long_c, short_c], [1, -1], default=0)
        # Explicit dtypes: pandas gives a void dtype to columns created by an empty assignment,
        # which breaks Freqtrade's lookahead-analysis frame comparison.
        dataframe["enter_long"] = 0
        dataframe["enter_short"] = 0
        dataframe["enter_tag"] = pd.Series(None, index=dataframe.index, dtype=object)
        for col in (_ORACLE_CONFIDENCE, _ORACLE_STOP, _ORACLE_TARGET):
            dataframe[col] = np.nan
        oracle = self._ensure_oracle()
        if oracle is None:
            self._mark_entries(dataframe, np.flatnonzero(long_c), Side.LONG, "prefilter_long")
            self._mark_entries(dataframe, np.flatnonzero(short_c), Side.SHORT, "prefilter_short")
            return dataframe

        rows = np.flatnonzero((long_c | short_c).to_numpy())
        if self._live:
            # Live only the newest candle can become an order; older candidates are history.
            rows = rows[rows == len(dataframe) - 1]
        else:
            # Startup candles are never traded, and their indicators are still warming up.
            rows = rows[rows >= self.startup_candle_count]
        sides = [Side.LONG if long_c.iat[i] else Side.SHORT for i in rows]
        asked = entry_requests(
            dataframe,
            rows.tolist(),
            sides,
            self._fees(metadata["pair"]),
            timeframe=self.timeframe,
            n_candles=oracle.config.prompt_candles,
        )
        if not asked:
            return dataframe
        outcomes = oracle.decide_many([request for _, request in asked])
        threshold = float(self.min_confidence.value)
        enter_rows: dict[str, list[int]] = {"long": [], "short": []}
        confirmed: list[tuple[int, Any]] = []
        conf = dataframe[_ORACLE_CONFIDENCE].to_numpy(copy=True)
        stop = dataframe[_ORACLE_STOP].to_numpy(copy=True)
        target = dataframe[_ORACLE_TARGET].to_numpy(copy=True)
        for (row, request), outcome in zip(asked, outcomes, strict=True):
            decision = outcome.decision
            conf[row] = decision.confidence
            agrees = decision.action is Action(request.candidate.value)  # type: ignore[union-attr]
            if agrees and decision.confidence >= threshold and decision.stop_loss is not None:
                enter_rows[decision.action.value].append(row)
                confirmed.append((row, decision))
                stop[row] = decision.stop_loss
                target[row] = decision.take_profit if decision.take_profit else np.nan
        dataframe[_ORACLE_CONFIDENCE] = conf
        dataframe[_ORACLE_STOP] = stop
        dataframe[_ORACLE_TARGET] = target
        self._remember(
            metadata["pair"], dataframe, [r for r, _ in confirmed], [d for _, d in confirmed]
        )
        self._mark_entries(dataframe, enter_rows["long"], Side.LONG, "oracle_long")
        self._mark_entries(dataframe, enter_rows["short"], Side.SHORT, "oracle_short")
        return dataframe

    @staticmethod
    def _mark_entries(df: pd.DataFrame, rows: Any, side: Side, tag: str) -> None:
        index = df.index[rows]
        df.loc[index, f"enter_{side.value}"] = 1
        df.loc[index, "enter_tag"] = tag

    def populate_exit_trend(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        # Exits come from ROI, stops and (later) the oracle's exit review, not from signals.
        return dataframe

    def _fees(self, pair: str) -> Fees:
        market = self.dp.market(pair) if self.dp else None
        taker = float((market or {}).get("taker") or 0.0006)
        maker = float((market or {}).get("maker") or taker)
        return Fees(maker=maker, taker=taker)

    # --- the oracle's stop, carried on the trade ---------------------------------------------
    def _remember(self, pair: str, df: pd.DataFrame, rows: list[int], decisions: list[Any]) -> None:
        """Keep confirmed decisions by signal candle, so a fill finds its stop in O(1)."""
        confirmed = self._confirmed.setdefault(pair, {})
        dates = df["date"].to_numpy()
        for row, decision in zip(rows, decisions, strict=True):
            confirmed[pd.Timestamp(dates[row]).to_pydatetime()] = {
                "stop_loss": decision.stop_loss,
                "take_profit": decision.take_profit,
                "confidence": decision.confidence,
            }
        if self._live and len(confirmed) > _LIVE_MEMORY:
            for stale in sorted(confirmed)[:-_LIVE_MEMORY]:
                del confirmed[stale]

    def order_filled(
        self, pair: str, trade: Trade, order: Order, current_time: datetime, **kwargs: Any
    ) -> None:
        if order.ft_order_side != trade.entry_side or trade.nr_of_successful_entries != 1:
            return
        # The signal candle is the one before the candle the entry filled in.
        signal_date = timeframe_to_prev_date(self.timeframe, trade.open_date_utc) - timedelta(
            minutes=timeframe_to_minutes(self.timeframe)
        )
        decision = self._confirmed.get(pair, {}).get(signal_date)
        if decision is not None:
            # One write: Freqtrade's custom-data store is slow per call and persists in dry/live.
            trade.set_custom_data(_ORACLE_KEY, decision)
            self._stop_prices[trade.id] = _stop_price(trade.open_rate, trade.is_short, decision)

    def custom_stoploss(
        self,
        pair: str,
        trade: Trade,
        current_time: datetime,
        current_rate: float,
        current_profit: float,
        after_fill: bool,
        **kwargs: Any,
    ) -> float | None:
        if trade.id not in self._stop_prices:  # e.g. after a restart: read what was persisted
            decision = trade.get_custom_data(_ORACLE_KEY)
            self._stop_prices[trade.id] = (
                _stop_price(trade.open_rate, trade.is_short, decision) if decision else None
            )
        stop_price = self._stop_prices[trade.id]
        if stop_price is None:
            return None  # the hard stoploss stays in force
        # Relative to the current rate, on margin. Freqtrade only ever tightens a stop, so this
        # can never loosen the hard stoploss.
        relative = stoploss_from_absolute(
            stop_price, current_rate, is_short=trade.is_short, leverage=trade.leverage
        )
        return relative or None


def _stop_price(open_rate: float, is_short: bool, decision: dict[str, Any]) -> float | None:
    distance = decision.get("stop_loss")
    if not distance:
        return None
    return open_rate * (1 + distance) if is_short else open_rate * (1 - distance)


_summaries: list[Oracle] = []


def _register_summary(oracle: Oracle) -> None:
    """Print what the oracle did when a backtest ends (Freqtrade has no end-of-backtest hook)."""
    if not _summaries:
        atexit.register(_print_summaries)
    _summaries.append(oracle)


def _print_summaries() -> None:
    for oracle in _summaries:
        print(oracle.stats.summary(), flush=True)
