"""GeminiOracleStrategy: local pre-filter on 3m Bybit perpetuals, an LLM oracle confirms or vetoes.

This file adapts Freqtrade to `llm_oracle` and nothing more: indicators and the candidate
pre-filter are computed here, vectorised; every decision goes through `llm_oracle.Oracle`, and
every money rule's arithmetic lives in `llm_oracle.risk` (README, "Money rules").

Pre-filter (thresholds hyperoptable, "buy" space):
  long  candidate: close above EMA200, MACD(6,12,9) line crosses above its signal on this candle,
                   RSI(7) inside [rsi_long_min, rsi_long_max], volume >= volume_min x its mean,
                   and the last `integrity_window` candles evenly spaced with volume (no gaps).
  short candidate: the mirror image (below EMA200, cross down, RSI in the short band).
An entry needs a candidate AND an oracle decision for the same side with confidence >= the
`min_confidence` parameter; `enter_tag` says which (`oracle_long`, `oracle_short`, or
`prefilter_*` when the oracle is disabled in config).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pandas as pd
import pandas_ta as pta
import talib.abstract as ta
from ccxt import TICK_SIZE
from freqtrade.enums import RunMode
from freqtrade.exceptions import OperationalException
from freqtrade.persistence import KeyValueStore, Order, PairLocks, Trade
from freqtrade.strategy import (
    DecimalParameter,
    IntParameter,
    IStrategy,
    stoploss_from_absolute,
    timeframe_to_minutes,
    timeframe_to_prev_date,
    timeframe_to_seconds,
)

from llm_oracle import (
    Action,
    DecisionSource,
    Fees,
    FrameArrays,
    JournalError,
    Oracle,
    OracleConfigError,
    Outcome,
    Position,
    Side,
    entry_requests,
    exit_hooks,
    exit_review_at,
    load_config,
    log_redaction,
    notify,
    open_oracle,
    risk,
    startup_checks,
    ui_columns,
)
from llm_oracle.config import NotifyConfig
from llm_oracle.indicators import windowed_ema
from llm_oracle.ledger import ClosedTrade, Lock, LossLedger, utc_day
from llm_oracle.trade_memory import DecisionMemory, ReviewSchedule

logger = logging.getLogger(__name__)

# EMA200 is windowed over 1000 candles (see populate_indicators), so its value at a candle is the
# same from any history of 1000+ candles: a backtest starting on another day, or a live bot's
# shorter frame, produces the same request keys. The other indicators forget their start within
# a few hundred candles.
STARTUP_CANDLES = 1200
EMA200_WINDOW = 1000  # candles of EMA200's weights kept: 5 x its period, <= the startup
_ORACLE_KEY = "oracle"  # trade custom-data key holding the entry decision
_REVIEW_KEY = "oracle_review"  # trade custom-data key holding the latest exit review
_LIVE_MEMORY = 50  # confirmed signals kept per pair in dry/live (fills happen within a candle)
# The UTC day of the last daily summary sent, in Freqtrade's key-value store (the trades DB):
# the bot's own state, so a restart never sends a day twice, and a new DB starts afresh.
_SUMMARY_KEY = "llm_oracle_summary_day"

_DEFAULT_NOTIFY = NotifyConfig()

T = TypeVar("T")


def _fail_closed(safe: Any, what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A money-rule callback that raises answers `safe` (no entry, the hard stop) and says why.

    Freqtrade's own wrapper answers an exception in confirm_trade_entry with True: an error there
    would let the entry through with no open-risk or re-entry check.
    """

    def wrap(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def guarded(self: Any, pair: str, *args: Any, **kwargs: Any) -> T:
            try:
                return method(self, pair, *args, **kwargs)
            except Exception:
                logger.exception("%s: %s failed; %s", pair, method.__name__, what)
                self._refusals["callback error"] += 1
                return safe

        # Freqtrade reads callback signatures with getfullargspec, which ignores __wrapped__:
        # without this it would not see custom_stoploss's after_fill and skip the after-fill call.
        guarded.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
        return guarded

    return wrap


class _TradeRisk(NamedTuple):
    """Per-trade numbers the per-candle callbacks need, kept out of Freqtrade's slow store.

    A NamedTuple, not a dataclass: Freqtrade imports strategy files without registering them in
    sys.modules, which dataclasses need.
    """

    stop: float  # absolute price of the initial stop (tightest of oracle, ATR, hard)
    atr: float  # absolute ATR at the signal candle, for the trailing stop
    take_profit: float | None
    signal_close: float | None  # close of the signal candle: exit reviews measure from it


_NO_RISK = _TradeRisk(stop=0.0, atr=0.0, take_profit=None, signal_close=None)


class GeminiOracleStrategy(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "3m"
    can_short = True
    startup_candle_count = STARTUP_CANDLES
    process_only_new_candles = True

    # The hard floor: no trade is ever without this stop (risk on margin, Freqtrade convention).
    stoploss = -0.05
    use_custom_stoploss = True
    # Exits are the N x fee rule in custom_roi; the lower of the two wins, so this one is inert.
    minimal_roi = {"0": 10.0}
    use_custom_roi = True
    use_exit_signal = False

    rsi_long_min = IntParameter(30, 55, default=45, space="buy")
    rsi_long_max = IntParameter(60, 90, default=75, space="buy")
    rsi_short_min = IntParameter(10, 40, default=25, space="buy")
    rsi_short_max = IntParameter(45, 70, default=55, space="buy")
    volume_min = DecimalParameter(0.3, 2.0, default=0.8, decimals=2, space="buy")
    min_confidence = DecimalParameter(0.4, 0.95, default=0.6, decimals=2, space="buy")

    # Candidates, confirmations, vetoes and exit-review exits as markers on the price, the open
    # trade's oracle stop and target as lines, confidences in the Oracle panel (ui_columns).
    plot_config = ui_columns.plot_config()

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        # config.json's log_config redacts the credentials from the environment from the first
        # log line on; these are the ones only the config knows (e.g. the API password).
        log_redaction.add_secrets(*_credentials(config))
        try:
            # Loaded here, not in bot_start: Freqtrade reads `protections` before bot_start.
            self.money = risk.load_money_rules(config.get("money_rules"))
        except OracleConfigError as exc:
            raise OperationalException(str(exc)) from None
        if self._live:
            # The same check `llm-oracle check-config` runs (only dry-run and live serve the API).
            try:
                startup_checks.check_api_server(config.get("api_server"))
            except OracleConfigError as exc:
                raise OperationalException(str(exc)) from None
        self._oracle: Oracle | None = None
        self._oracle_enabled = True
        self._memory = DecisionMemory(self._candle, _LIVE_MEMORY if self._live else None)
        self._trade_risk: dict[int, _TradeRisk | None] = {}
        self._ledger = LossLedger(self.money, locks_on=self._protections_on)
        # Routine refusals, counted and summarised rather than logged once per candle.
        self._refusals: Counter[str] = Counter()
        self._ticks: dict[str, float] = {}
        # Live: what was asked for the current candle (fallbacks included), so a decision is
        # asked once however many callbacks run, and the newest candle seen per pair.
        self._candle_memo: dict[str, Outcome] = {}
        self._prefetched: dict[str, datetime] = {}
        self._schedule: ReviewSchedule | None = None
        self._last_loop: datetime | None = None
        # Backtests: each pair's frame as arrays and its candle times (int64 ns), for reviews.
        self._frames: dict[str, tuple[FrameArrays, np.ndarray]] = {}
        # Live: the oracle's answers by candle, painted into every new frame for FreqUI; pairs
        # whose earlier candidates were looked up in the journal; the last daily summary's day.
        self._marks = ui_columns.CandleMarks()
        self._backfilled: set[str] = set()
        self._summary_day: date | None = None
        self._summary_read = False

    # --- lifecycle -----------------------------------------------------------------------------
    def bot_start(self, **kwargs: Any) -> None:
        self._check_startup()
        self._warn_hyperopt_params()
        if self._live:
            self._rebuild_ledger()
        else:
            exit_hooks.register(self._print_summary)
            self._warn_missing_futures_data()

    def _warn_hyperopt_params(self) -> None:
        """Say loudly that hyperopt's exported parameters are in force in this run.

        Freqtrade loads `<strategy>.json` next to the strategy on every later run and only says
        so at INFO: a hyperopt run would otherwise silently change `make demo` or a live bot.
        """
        if self.config.get("runmode") == RunMode.HYPEROPT:
            return
        source = getattr(self, "__file__", "")
        params = Path(source).with_suffix(".json") if source else None
        if params is not None and params.is_file():
            logger.warning(
                "%s (written by freqtrade hyperopt) overrides the strategy's shipped parameters "
                "in this run; delete it to return to them (hyperopt --disable-param-export "
                "writes none)",
                params,
            )

    def _check_startup(self) -> None:
        """What bot_start refuses before anything runs; check-config runs the same checks."""
        try:
            # self.stoploss is the config's `stoploss` when set (Freqtrade's resolver copies it).
            startup_checks.check_hard_stoploss(self.stoploss)
        except OracleConfigError as exc:
            raise OperationalException(str(exc)) from None
        self._ensure_oracle()

    def _warn_missing_futures_data(self) -> None:
        """Once per run: pairs whose funding would silently be 0 (no mark or funding candles)."""
        datadir = self.config.get("datadir")
        if self.config.get("trading_mode") != "futures" or not datadir:
            return
        folder = Path(datadir) / "futures"
        for kind, what in (("mark", "mark-price"), ("funding_rate", "funding-rate")):
            missing = [
                pair
                for pair in self.config.get("exchange", {}).get("pair_whitelist", [])
                if not any(folder.glob(f"{pair.replace('/', '_').replace(':', '_')}-*-{kind}.*"))
            ]
            if missing:
                logger.warning(
                    "no %s candles for %s in %s: their funding fees are %s in this backtest",
                    what,
                    ", ".join(missing),
                    folder,
                    "0" if kind == "mark" else "the config's futures_funding_rate (or 0)",
                )

    def _rebuild_ledger(self) -> None:
        """Daily loss, stop-loss streak and last exits from the persisted trades (restart-safe).

        Runs at start and after /reload_config (which builds a new strategy), so neither resets
        the day's loss or the streak.
        """
        now = datetime.now(UTC)
        closed = [_closed(t) for t in Trade.get_trades_proxy(is_open=False) if t.close_date]
        equity = self.wallets.get_total_stake_amount() if self.wallets else 0.0
        self._ledger = LossLedger.rebuild(
            self.money, closed, equity, now, locks_on=self._protections_on
        )
        logger.info(
            "risk ledger rebuilt from %d closed trades: day P&L %.2f of %.2f, "
            "losing-stop streak %d",
            len(closed),
            self._ledger.day_pnl,
            self._ledger.day_start_equity,
            self._ledger.stop_streak,
        )

    def _ensure_oracle(self) -> Oracle | None:
        if self._oracle is not None or not self._oracle_enabled:
            return self._oracle
        block = self.config.get("llm_oracle")
        if self.config.get("runmode") == RunMode.HYPEROPT:
            block = _without_paid_calls(block)
        try:
            cfg = load_config(block)
        except OracleConfigError as exc:
            raise OperationalException(str(exc)) from None
        self._oracle_enabled = cfg.enabled
        if not cfg.enabled:
            logger.info("llm_oracle disabled: entries follow the pre-filter alone")
            return None
        # Exit signals go on only while an exit review says exit (see _review_open_trades).
        if cfg.exit_review.enabled:
            review = cfg.exit_review
            self._schedule = ReviewSchedule(review.min_candles, review.every_candles, self._candle)
        self.use_exit_signal = False
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
        return self._oracle

    def bot_loop_start(self, current_time: datetime, **kwargs: Any) -> None:
        if not self._live:
            self._start_run_if_new(current_time)
        if self._schedule is not None and self._has_trades:
            self._review_open_trades(current_time)
        if self._live:
            self._prefetch_entries()
            self._announce_events()
            self._send_daily_summary(current_time)

    def _start_run_if_new(self, now: datetime) -> None:
        """Forget the previous run's trades when a new backtest starts on the same instance.

        Hyperopt with one job reuses one strategy for every epoch; its clock jumps back to the
        start date, and the ledger, trade stops and review verdicts of the last epoch must not
        carry over. Decisions by candle stay: the new epoch's populate_entry_trend has already
        refreshed them.
        """
        if self._last_loop is not None and now <= self._last_loop:
            self._ledger = LossLedger(self.money, locks_on=self._protections_on)
            self._trade_risk.clear()
            if self._schedule is not None:
                self._schedule.clear()
        self._last_loop = now

    def _print_summary(self, is_last: bool) -> None:
        """What the oracle and the protections did, printed when a backtest ends.

        Freqtrade's report does not list locks. lookahead-analysis builds several strategies:
        each prints its oracle line, the last one the refusals and locks.
        """
        oracle = self._oracle
        print(oracle.stats.summary() if oracle else "oracle: disabled", flush=True)
        if not is_last:
            return
        print(f"entries refused: {_refusal_text(self._refusals)}", flush=True)
        if self._protections_on:
            reasons = Counter(_lock_kind(lock.reason or "") for lock in PairLocks.get_all_locks())
            listed = ", ".join(f"{kind} {n}" for kind, n in sorted(reasons.items())) or "none"
            print(f"locks: {listed}", flush=True)

    def __getstate__(self) -> dict[str, Any]:
        """Hyperopt pickles the strategy into its worker processes.

        The oracle holds a thread, an HTTP client and a SQLite connection, none of which can be
        pickled; each worker reopens its own on first use (the journal takes several writers).
        """
        state = self.__dict__.copy()
        state["_oracle"] = None
        state["_candle_memo"] = {}
        state["_frames"] = {}  # each epoch's populate_entry_trend fills them again
        return state

    def _review_open_trades(self, now: datetime) -> None:
        """The oracle's exit review of every open trade that is due, asked as one batch.

        Reviews read the newest closed candle, once per trade and candle. custom_exit only reports
        the verdict: Freqtrade deep-copies the trade for every custom_exit call on every candle,
        so exit signals are switched on only while an exit verdict is waiting.

        Live and backtest reviews of the same trade on the same candle build the same request,
        so a backtest over a dry-run's period replays its reviews: the same candle (the newest
        closed one), candles held counted from the entry candle, and profit measured from the
        signal candle's close, which both modes share (their fills differ).
        """
        oracle, schedule = self._ensure_oracle(), self._schedule
        assert oracle is not None and schedule is not None
        review = oracle.config.exit_review
        closed = timeframe_to_prev_date(self.timeframe, now) - self._candle
        due: list[tuple[Trade, Any, pd.DataFrame]] = []
        open_ids = set()
        for trade in Trade.get_trades_proxy(is_open=True):
            open_ids.add(trade.id)
            entry_candle = timeframe_to_prev_date(self.timeframe, trade.open_date_utc)
            held = schedule.due(trade.id, entry_candle, closed)
            if held is None:
                continue
            at = self._frame_until(trade.pair, closed, oracle.config.prompt_candles)
            if at is None:
                continue  # live: not analysed yet; the next loop of this candle will see it
            arrays, row, df = at
            close = float(arrays.cols["close"][row])
            reference = float((self._risk_of(trade) or _NO_RISK).signal_close or trade.open_rate)
            move = close / reference - 1.0
            request = exit_review_at(
                arrays,
                row,
                Position(
                    side=_side_of(trade),
                    profit_pct=(-move if trade.is_short else move) * trade.leverage * 100,
                    candles_held=held,
                    leverage=trade.leverage,
                ),
                self._fees(trade.pair),
                timeframe=self.timeframe,
                n_candles=oracle.config.prompt_candles,
            )
            if request is not None:
                due.append((trade, request, df))
        outcomes = self._decide(oracle, [r for _, r, _ in due]) if due else []
        for (trade, _, df), outcome in zip(due, outcomes, strict=True):
            decision = outcome.decision
            exit_now = (
                decision.action is Action.EXIT and decision.confidence >= review.min_confidence
            )
            schedule.record(trade.id, closed, "oracle_exit" if exit_now else None)
            if self._live:
                self._show_review(trade, df, closed, outcome, exit_now)
        schedule.keep_only(open_ids)
        self.use_exit_signal = schedule.any_exit()

    def _show_review(
        self, trade: Trade, df: pd.DataFrame, candle: datetime, outcome: Outcome, exits: bool
    ) -> None:
        """Live: a review on the chart, on the trade (custom data) and in a message.

        `df` is Freqtrade's analysed frame itself (live it is not a copy), already painted for
        this candle: the review is painted into it now, not one candle later.
        """
        decision = outcome.decision
        self._marks.review(trade.pair, candle, decision.confidence, exits)
        self._marks.paint(trade.pair, df)
        trade.set_custom_data(
            _REVIEW_KEY,
            {
                "candle": candle.isoformat(),
                "action": decision.action.value,
                "confidence": decision.confidence,
                "exit": exits,
                "source": outcome.source.value,
                "reasoning": decision.reasoning[:500],
            },
        )
        if self.dp is not None and (exits or self._notify.decisions):
            self.dp.send_msg(
                notify.review_text(
                    trade.pair,
                    decision.action.value,
                    decision.confidence,
                    exits,
                    decision.reasoning,
                )
            )

    def _frame_until(
        self, pair: str, candle: datetime, n_candles: int
    ) -> tuple[FrameArrays, int, pd.DataFrame | None] | None:
        """The analysed frame of `pair` at `candle`: its arrays, the row, and (live) the frame.

        None if the frame has not got there. Live that is Freqtrade's newest analysis, whose
        last row must be `candle`. In backtests Freqtrade's frame at loop start still ends one
        candle earlier than live, so the arrays of the full frame kept from
        populate_entry_trend are read at `candle`'s row (closed at loop time: no look-ahead;
        a request reads nothing after its row).
        """
        if self._live:
            df, _ = self.dp.get_analyzed_dataframe(pair, self.timeframe)
            if df is None or df.empty or df["date"].iloc[-1] != candle:
                return None
            window = df.iloc[-n_candles:]  # only the window: the frame is long
            arrays = FrameArrays(window)
            return arrays, arrays.length - 1, df
        kept = self._frames.get(pair)
        if kept is None:
            return None
        arrays, dates = kept
        wanted = pd.Timestamp(candle).as_unit("ns").value
        row = int(np.searchsorted(dates, wanted, side="right")) - 1
        if row < 0 or dates[row] != wanted:
            return None
        return arrays, row, None

    def _prefetch_entries(self) -> None:
        """Ask about every pair's newest candidate at once, before Freqtrade analyses pairs.

        Freqtrade analyses pairs one after another; asking from populate_entry_trend would make
        the loop wait for the sum of the calls. Here all candidates of the new candle go out
        together (bounded by timeout_s in total), and populate_entry_trend then finds them.
        """
        oracle = self._ensure_oracle()
        if oracle is None or self.dp is None:
            return
        asked: list[Any] = []
        for pair in self.dp.current_whitelist():
            candles = self.dp.ohlcv(pair, self.timeframe)
            if candles is None or candles.empty:
                continue
            newest = candles["date"].iloc[-1].to_pydatetime()
            if self._prefetched.get(pair) == newest:
                continue
            self._prefetched[pair] = newest
            frame = self.populate_indicators(candles.copy(), {"pair": pair})
            long_c, short_c = self._candidates(frame)
            row = len(frame) - 1
            if not (long_c.iat[row] or short_c.iat[row]):
                continue
            side = Side.LONG if long_c.iat[row] else Side.SHORT
            asked += [r for _, r in self._entry_requests(oracle, frame, [row], [side], pair)]
        if asked:
            self._decide(oracle, asked)

    def _entry_requests(
        self,
        oracle: Oracle,
        df: pd.DataFrame | FrameArrays,
        rows: list[int],
        sides: list[Side],
        pair: str,
    ) -> list[tuple[int, Any]]:
        return entry_requests(
            df,
            rows,
            sides,
            self._fees(pair),
            timeframe=self.timeframe,
            n_candles=oracle.config.prompt_candles,
        )

    def _decide(self, oracle: Oracle, requests: list[Any]) -> list[Outcome]:
        """decide_many, plus (live) a memo so a failed ask is not repeated within the candle."""
        if not self._live:
            return oracle.decide_many(requests)
        keys = [oracle.key_for(r) for r in requests]
        fresh = [(k, r) for k, r in zip(keys, requests, strict=True) if k not in self._candle_memo]
        if fresh:
            outcomes = oracle.decide_many([r for _, r in fresh])
            for (key, _), outcome in zip(fresh, outcomes, strict=True):
                self._candle_memo[key] = outcome
        if len(self._candle_memo) > 2000:  # keys of past candles are never asked again
            self._candle_memo = {k: self._candle_memo[k] for k in keys}
        return [self._candle_memo[k] for k in keys]

    def _announce_events(self) -> None:
        """Oracle events (fallback switches, budget, breaker) go to Telegram / webhooks."""
        if self._oracle is None or self.dp is None:
            return
        for message in self._oracle.drain_events():
            self.dp.send_msg(notify.event_text(message))

    def _send_daily_summary(self, now: datetime) -> None:
        """The day's oracle summary, once per UTC day from the configured time on.

        The day sent is stored in Freqtrade's key-value store before the message leaves (at the
        end of this loop): at most once per day even across restarts; a crash in between loses
        that day's message rather than repeating it.
        """
        oracle = self._oracle
        if oracle is None or self.dp is None:
            return
        at = oracle.config.notify.daily_summary_utc
        if not self._summary_read:
            self._summary_read = True
            stored = KeyValueStore.get_string_value(_SUMMARY_KEY)  # type: ignore[arg-type]
            self._summary_day = date.fromisoformat(stored) if stored else None
            if at is not None:
                logger.info(
                    "llm_oracle: daily summary at %s UTC, last sent for %s",
                    at,
                    self._summary_day or "no day yet",
                )
        day = notify.summary_due(now, at, self._summary_day)
        if day is None:
            return
        oracle.flush(timeout=1.0)  # this loop's answers are in the journal
        guard = oracle.guard
        try:
            summary = notify.daily_summary(
                oracle.journal,
                day,
                paid_backend=guard.name if guard else None,
                budget=guard.budget.config if guard else None,
            )
        except JournalError as exc:
            logger.warning("llm_oracle: daily summary not sent, journal unreadable: %s", exc)
            return
        KeyValueStore.store_value(_SUMMARY_KEY, day.isoformat())  # type: ignore[arg-type]
        self._summary_day = day
        text = summary.text()
        logger.info(text)
        self.dp.send_msg(text, always_send=True)

    def ft_bot_cleanup(self) -> None:
        """Freqtrade's shutdown hook, also called on /reload_config before a new strategy is
        built: closing the oracle here is what keeps reloads from leaking its loop thread, HTTP
        session and SQLite connection."""
        super().ft_bot_cleanup()
        oracle, self._oracle = self._oracle, None
        if oracle is not None:
            logger.info(oracle.stats.summary())
            if self._refusals:
                logger.info("entries refused: %s", _refusal_text(self._refusals))
            oracle.close()

    @property
    def _notify(self) -> Any:
        oracle = self._oracle
        return oracle.config.notify if oracle is not None else _DEFAULT_NOTIFY

    @property
    def _live(self) -> bool:
        return self.config.get("runmode") in (RunMode.LIVE, RunMode.DRY_RUN)

    @property
    def _has_trades(self) -> bool:
        # plot-dataframe runs the strategy with no trade database at all.
        return self.config.get("runmode") != RunMode.PLOT

    @property
    def _candle(self) -> timedelta:
        return timedelta(minutes=timeframe_to_minutes(self.timeframe))

    @property
    def _protections_on(self) -> bool:
        # Same switch as Freqtrade's own protections: always live, opt-in for backtests.
        return self._live or bool(self.config.get("enable_protections", False))

    @property
    def protections(self) -> list[dict[str, Any]]:
        p = self.money.protections
        out: list[dict[str, Any]] = []
        if p.pair_cooldown_candles:
            out.append(
                {"method": "CooldownPeriod", "stop_duration_candles": p.pair_cooldown_candles}
            )
        if p.max_drawdown:
            out.append(
                {
                    "method": "MaxDrawdown",
                    "calculation_mode": "equity",
                    "lookback_period_candles": p.drawdown_lookback_candles,
                    "trade_limit": 1,
                    "stop_duration_candles": p.drawdown_stop_candles,
                    "max_allowed_drawdown": p.max_drawdown,
                }
            )
        return out

    # --- indicators and candidates -----------------------------------------------------------
    def populate_indicators(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        dataframe["ema9"] = ta.EMA(dataframe, timeperiod=9)
        dataframe["ema21"] = ta.EMA(dataframe, timeperiod=21)
        # Windowed: the same value from a live bot's ~1200 candles and a backtest's history, so
        # decisions recorded live replay in backtests (a recursive EMA200 differs by its seed).
        dataframe["ema200"] = windowed_ema(dataframe["close"].to_numpy(), 200, EMA200_WINDOW)
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
        # Integrity shield: no entry from a window with a gap or a candle without trades.
        clean = risk.clean_windows(
            df["date"].dt.tz_localize(None).to_numpy("datetime64[s]").astype(np.int64),
            df["volume"].to_numpy(dtype=float),
            timeframe_to_seconds(self.timeframe),
            self.money.integrity_window,
        )
        ok = (df["volume_ratio"] >= self.volume_min.value) & pd.Series(clean, index=df.index)
        long_c = (
            (df["close"] > df["ema200"])
            & (hist > 0)
            & (prev_hist <= 0)
            & df["rsi"].between(self.rsi_long_min.value, self.rsi_long_max.value)
            & ok
        )
        short_c = (
            (df["close"] < df["ema200"])
            & (hist < 0)
            & (prev_hist >= 0)
            & df["rsi"].between(self.rsi_short_min.value, self.rsi_short_max.value)
            & ok
        )
        return long_c.fillna(False), short_c.fillna(False)

    # --- entries -------------------------------------------------------------------------------
    def populate_entry_trend(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        pair = metadata["pair"]
        long_c, short_c = self._candidates(dataframe)
        either = (long_c | short_c).to_numpy()
        dataframe["candidate"] = np.select([long_c, short_c], [1, -1], default=0)
        # Explicit dtypes: pandas gives a void dtype to columns created by an empty assignment,
        # which breaks Freqtrade's lookahead-analysis frame comparison.
        dataframe["enter_long"] = 0
        dataframe["enter_short"] = 0
        dataframe["enter_tag"] = pd.Series(None, index=dataframe.index, dtype=object)
        for col in ui_columns.MARK_COLUMNS:
            dataframe[col] = np.nan
        close = dataframe["close"].to_numpy(dtype=float)
        dataframe[ui_columns.CANDIDATE] = np.where(either, close, np.nan)
        oracle = self._ensure_oracle()
        arrays = None
        if not self._live and oracle is not None:
            # Exit reviews read the whole frame's arrays at their candle (see _frame_until).
            arrays = FrameArrays(dataframe)
            dates = pd.DatetimeIndex(dataframe["date"]).as_unit("ns").asi8
            self._frames[pair] = (arrays, dates)
        if oracle is None:
            for side, mask in ((Side.LONG, long_c), (Side.SHORT, short_c)):
                rows = np.flatnonzero(mask.to_numpy()).tolist()
                self._remember(pair, dataframe, rows, [None] * len(rows))
                self._mark_entries(dataframe, rows, side, f"prefilter_{side.value}")
            return dataframe

        rows = np.flatnonzero(either)
        if self._live:
            self._backfill_marks(oracle, pair, dataframe, rows[rows < len(dataframe) - 1], long_c)
            # Live only the newest candle can become an order; older candidates are history.
            rows = rows[rows == len(dataframe) - 1]
        else:
            # Startup candles are never traded, and their indicators are still warming up.
            rows = rows[rows >= self.startup_candle_count]
        sides = [Side.LONG if long_c.iat[i] else Side.SHORT for i in rows]
        asked = self._entry_requests(
            oracle, arrays if arrays is not None else dataframe, rows.tolist(), sides, pair
        )
        if asked:
            self._enter_on(oracle, pair, dataframe, asked)
        if self._live:
            self._marks.paint(pair, dataframe)
            if self._has_trades:
                self._paint_open_trades(pair, dataframe)
        return dataframe

    def _enter_on(
        self, oracle: Oracle, pair: str, df: pd.DataFrame, asked: list[tuple[int, Any]]
    ) -> None:
        """Ask about the candidate rows, mark the confirmed ones as entries, keep every answer."""
        outcomes = self._decide(oracle, [request for _, request in asked])
        threshold = float(self.min_confidence.value)
        n = len(asked)
        rows = np.fromiter((row for row, _ in asked), dtype=np.int64, count=n)
        confidence = np.empty(n)
        confirmed = np.zeros(n, dtype=bool)
        stop = np.full(n, np.nan)
        target = np.full(n, np.nan)
        enter_rows: dict[str, list[int]] = {"long": [], "short": []}
        kept: list[tuple[int, Any]] = []
        for i, ((row, request), outcome) in enumerate(zip(asked, outcomes, strict=True)):
            decision = outcome.decision
            confidence[i] = decision.confidence
            if _confirms(request, decision, threshold):
                confirmed[i] = True
                stop[i] = decision.stop_loss
                target[i] = decision.take_profit or np.nan
                enter_rows[decision.action.value].append(row)
                kept.append((row, decision))
        self._remember(pair, df, [r for r, _ in kept], [d for _, d in kept])
        self._mark_entries(df, enter_rows["long"], Side.LONG, "oracle_long")
        self._mark_entries(df, enter_rows["short"], Side.SHORT, "oracle_short")
        if not self._live:
            ui_columns.mark_decisions(df, rows, confidence, confirmed, stop, target)
            return
        # Live: kept by candle (painted into every later frame too) and announced.
        dates = df["date"]
        for i, ((row, request), outcome) in enumerate(zip(asked, outcomes, strict=True)):
            decision = outcome.decision
            self._marks.entry(
                pair,
                dates.iat[row].to_pydatetime(),
                decision.confidence,
                bool(confirmed[i]),
                decision.stop_loss,
                decision.take_profit,
            )
            if self.dp is not None and self._notify.decisions:
                self.dp.send_msg(
                    notify.entry_text(
                        pair,
                        request.candidate.value,
                        decision.action.value,
                        decision.confidence,
                        _source_name(oracle, outcome),
                        outcome.error_kind.value if outcome.error_kind else None,
                        bool(confirmed[i]),
                        decision.reasoning,
                    )
                )

    def _backfill_marks(
        self, oracle: Oracle, pair: str, df: pd.DataFrame, rows: np.ndarray, long_c: pd.Series
    ) -> None:
        """Live, once per pair: the journal's answers for the frame's earlier candidates.

        A restarted bot's chart then shows what was decided before the restart (and what a
        recording or another run asked about the same candles). Journal reads only: no call.
        """
        if pair in self._backfilled:
            return
        self._backfilled.add(pair)
        sides = [Side.LONG if long_c.iat[i] else Side.SHORT for i in rows]
        asked = self._entry_requests(oracle, df, rows.tolist(), sides, pair)
        if not asked:
            return
        keys = [oracle.key_for(request) for _, request in asked]
        try:
            found = oracle.journal.lookup(keys)
        except JournalError as exc:
            logger.warning("%s: earlier decisions not shown, journal unreadable: %s", pair, exc)
            return
        threshold = float(self.min_confidence.value)
        dates = df["date"]
        for (row, request), key in zip(asked, keys, strict=True):
            decision = found.get(key)
            if decision is not None:
                self._marks.entry(
                    pair,
                    dates.iat[row].to_pydatetime(),
                    decision.confidence,
                    _confirms(request, decision, threshold),
                    decision.stop_loss,
                    decision.take_profit,
                )

    def _paint_open_trades(self, pair: str, df: pd.DataFrame) -> None:
        """The open trade's stop and oracle target as price lines from its entry candle on."""
        for trade in Trade.get_trades_proxy(pair=pair, is_open=True):
            info = self._risk_of(trade)
            if info is None or not trade.open_rate:
                continue
            target = None
            if info.take_profit:
                sign = -1.0 if trade.is_short else 1.0
                target = trade.open_rate * (1.0 + sign * info.take_profit)
            entry_candle = timeframe_to_prev_date(self.timeframe, trade.open_date_utc)
            ui_columns.paint_trade(df, entry_candle, info.stop or None, target)

    @staticmethod
    def _mark_entries(df: pd.DataFrame, rows: Any, side: Side, tag: str) -> None:
        index = df.index[rows]
        df.loc[index, f"enter_{side.value}"] = 1
        df.loc[index, "enter_tag"] = tag

    def populate_exit_trend(self, dataframe: pd.DataFrame, metadata: dict) -> pd.DataFrame:
        # Exits come from the fee rule (custom_roi) and the stops, not from signals.
        return dataframe

    def _fees(self, pair: str) -> Fees:
        market = self.dp.market(pair) if self.dp else None
        taker = float((market or {}).get("taker") or 0.0006)
        maker = float((market or {}).get("maker") or taker)
        return Fees(maker=maker, taker=taker)

    def _round_trip_fee(self, pair: str) -> float:
        # Sizing must assume the worse of the configured backtest fee and the market's taker fee.
        return 2 * max(float(self.config.get("fee") or 0.0), self._fees(pair).taker)

    # --- what was decided at the signal candle ---------------------------------------------
    def _remember(self, pair: str, df: pd.DataFrame, rows: list[int], decisions: list[Any]) -> None:
        """Keep confirmed entries by signal candle, so later callbacks find them in O(1)."""
        dates = df["date"].to_numpy()
        atr = df["atr"].to_numpy(dtype=float)
        close = df["close"].to_numpy(dtype=float)
        k = self.money.atr_stop_multiplier
        for row, decision in zip(rows, decisions, strict=True):
            self._memory.remember(
                pair,
                pd.Timestamp(dates[row]).to_pydatetime(),
                {
                    "stop_loss": decision.stop_loss if decision else None,
                    "take_profit": decision.take_profit if decision else None,
                    "confidence": decision.confidence if decision else None,
                    "reasoning": decision.reasoning[:500] if decision else None,
                    "atr": float(atr[row]),
                    "atr_stop": float(k * atr[row] / close[row]),
                    "close": float(close[row]),
                },
            )

    def _decision_at(self, pair: str, entry_time: datetime) -> dict[str, Any] | None:
        """The remembered decision for an entry at `entry_time` (its signal is one candle back)."""
        return self._memory.at_entry(pair, timeframe_to_prev_date(self.timeframe, entry_time))

    def _initial_distance(self, decision: dict[str, Any] | None, leverage: float) -> float:
        decision = decision or {}
        return risk.initial_stop_distance(
            decision.get("stop_loss"), decision.get("atr_stop"), self.stoploss, leverage
        )

    # --- sizing, leverage, entry gate -------------------------------------------------------
    # Each callback fails closed: an error means 1x leverage, no stake, no entry.
    @_fail_closed(1.0, "using 1x leverage")
    def leverage(
        self,
        pair: str,
        current_time: datetime,
        current_rate: float,
        proposed_leverage: float,
        max_leverage: float,
        entry_tag: str | None,
        side: str,
        **kwargs: Any,
    ) -> float:
        decision = self._decision_at(pair, current_time) or {}
        return risk.leverage_for(decision.get("confidence") or 0.0, self.money, max_leverage)

    @_fail_closed(0.0, "no entry")
    def custom_stake_amount(
        self,
        pair: str,
        current_time: datetime,
        current_rate: float,
        proposed_stake: float,
        min_stake: float | None,
        max_stake: float,
        leverage: float,
        entry_tag: str | None,
        side: str,
        **kwargs: Any,
    ) -> float:
        distance = self._initial_distance(self._decision_at(pair, current_time), leverage)
        equity = self.wallets.get_total_stake_amount() if self.wallets else proposed_stake
        sized = risk.risk_sized_stake(
            equity, self.money.risk_per_trade, leverage, distance, self._round_trip_fee(pair)
        )
        stake = min(proposed_stake, max_stake, sized)
        if min_stake and stake < min_stake:
            self._refusals["stake below minimum"] += 1
            logger.debug("%s: risk-sized stake %.2f is below the minimum; no entry", pair, stake)
            return 0.0
        return stake

    @_fail_closed(False, "no entry")
    def confirm_trade_entry(
        self,
        pair: str,
        order_type: str,
        amount: float,
        rate: float,
        time_in_force: str,
        current_time: datetime,
        entry_tag: str | None,
        side: str,
        **kwargs: Any,
    ) -> bool:
        if not self._ledger.reentry_allowed(pair, Side(side), rate, current_time):
            self._refusals["re-entry"] += 1
            logger.debug("%s: %s re-entry refused at %s", pair, side, rate)
            return False
        if self._live and self._stale(pair, current_time):
            logger.warning("%s: latest candle is stale; no entry", pair)
            return False
        decision = self._decision_at(pair, current_time)
        lev = risk.leverage_for((decision or {}).get("confidence") or 0.0, self.money, 100)
        fee = self._round_trip_fee(pair)
        new_risk = amount * rate * (self._initial_distance(decision, lev) + fee)
        open_risk = self._open_risk(fee)
        equity = self.wallets.get_total_stake_amount() if self.wallets else 0.0
        if open_risk + new_risk > self.money.max_open_risk * equity:
            self._refusals["open risk"] += 1
            # Live, each one is news; a backtest counts them in its summary instead.
            logger.log(
                logging.INFO if self._live else logging.DEBUG,
                "%s: open risk %.2f + %.2f would exceed %.3g%% of equity %.2f; no entry",
                pair,
                open_risk,
                new_risk,
                self.money.max_open_risk * 100,
                equity,
            )
            return False
        return True

    def _open_risk(self, round_trip_fee: float) -> float:
        """What every open trade can still lose at its stop, pending entries included.

        Freqtrade keeps a trade's amount at 0 until its entry order fills; several pairs that
        signal on one candle would otherwise all pass the cap. An open entry order counts at its
        requested size.
        """
        total = 0.0
        for t in Trade.get_trades_proxy(is_open=True):
            side, amount = _side_of(t), t.amount or 0.0
            stop = t.stop_loss
            if any(o.ft_order_side == t.entry_side for o in t.open_orders):
                amount = max(amount, t.amount_requested or 0.0)
                # Measured as the new entry was when it passed this check: at the stop it gets
                # once filled (the hard stop if its decision is no longer known, e.g. restarted).
                decision = self._decision_at(t.pair, t.open_date_utc)
                if decision is not None:
                    distance = self._initial_distance(decision, t.leverage or 1.0)
                    stop = risk.stop_price(t.open_rate, distance, side)
            if not stop:
                stop = risk.stop_price(t.open_rate, abs(self.stoploss) / (t.leverage or 1.0), side)
            total += risk.open_trade_risk(amount, t.open_rate, stop, side, round_trip_fee)
        return total

    def _stale(self, pair: str, now: datetime) -> bool:
        df, _ = self.dp.get_analyzed_dataframe(pair, self.timeframe)
        if df is None or df.empty:
            return True
        age = now - df["date"].iloc[-1].to_pydatetime()
        return age > self._candle * (self.money.max_candle_age_candles + 1)

    # --- fills: the trade's own stop, and the ledger behind the loss locks --------------------
    def order_filled(
        self, pair: str, trade: Trade, order: Order, current_time: datetime, **kwargs: Any
    ) -> None:
        try:
            is_entry = order.ft_order_side == trade.entry_side
            if is_entry:
                if trade.nr_of_successful_entries == 1:
                    self._on_entry(pair, trade)
            elif order.safe_filled and order.safe_filled >= trade.amount * 0.999:
                self._on_exit(trade, order, current_time)
        except Exception:
            # Freqtrade swallows errors here. An entry whose decision was not remembered keeps
            # the hard stop (custom_stoploss finds no risk record); an exit the ledger did not
            # count could hide a daily-loss or stop-streak lock, so entries stop instead.
            logger.exception("%s: order_filled failed", pair)
            self._refusals["callback error"] += 1
            self._ledger_failed(pair, current_time)

    def _ledger_failed(self, pair: str, now: datetime) -> None:
        """An exit fill could not be accounted for: no new entry until the ledger is sound.

        Live, the ledger is rebuilt from the trade database (the exit is in it); its locks are
        those the rebuilt day and streak demand. Where that fails too, or in a backtest, every
        pair is locked until the next UTC midnight: a lost loss must never allow more risk.
        """
        if self._live:
            try:
                self._rebuild_ledger()
                for lock in self._ledger.locks_due(now):
                    _lock_all(lock)
                logger.warning("%s: risk ledger rebuilt after a failed fill callback", pair)
                return
            except Exception:
                logger.exception("%s: risk ledger rebuild failed too", pair)
        until = utc_day(now) + timedelta(days=1)
        reason = "risk ledger error: an exit was not accounted for; entries paused"
        _lock_all(Lock(now, until, reason))
        logger.error("%s: %s until %s (check the log, then /unlock)", pair, reason, until)
        if self._live and self.dp is not None:
            self.dp.send_msg(notify.lock_text(until, reason))

    def _on_entry(self, pair: str, trade: Trade) -> None:
        decision = self._decision_at(pair, trade.open_date_utc)
        if decision is None:
            return
        # One write: Freqtrade's custom-data store is slow per call and persists in dry/live.
        trade.set_custom_data(_ORACLE_KEY, decision)
        self._trade_risk[trade.id] = self._risk_from(trade, decision)

    def _risk_from(self, trade: Trade, decision: dict[str, Any]) -> _TradeRisk:
        side = _side_of(trade)
        distance = self._initial_distance(decision, trade.leverage)
        return _TradeRisk(
            stop=risk.stop_price(trade.open_rate, distance, side),
            atr=float(decision.get("atr") or 0.0),
            take_profit=decision.get("take_profit"),
            signal_close=decision.get("close"),
        )

    def _on_exit(self, trade: Trade, order: Order, now: datetime) -> None:
        if self._live:
            # Live, Freqtrade has closed the trade when it reports the exit fill; the record is
            # then exactly what a restart rebuilds from (a partial exit closes nothing).
            if trade.is_open or not trade.close_date:
                return
            exit_ = _closed(trade)
        else:
            # Backtests report the fill before closing the trade.
            exit_ = ClosedTrade(
                trade_id=trade.id,
                pair=trade.pair,
                side=_side_of(trade),
                close_time=now,
                exit_price=order.safe_price,
                profit=trade.calc_profit(rate=order.safe_price, amount=order.safe_filled),
                exit_reason=order.ft_order_tag or trade.exit_reason or "",
            )
        equity = self.wallets.get_total_stake_amount() if self.wallets else 0.0
        for lock in self._ledger.record_exit(exit_, equity):
            _lock_all(lock)
            if self._live and self.dp is not None:
                self.dp.send_msg(notify.lock_text(lock.until, lock.reason))

    # --- exits ---------------------------------------------------------------------------------
    def custom_exit(
        self,
        pair: str,
        trade: Trade,
        current_time: datetime,
        current_rate: float,
        current_profit: float,
        **kwargs: Any,
    ) -> str | None:
        """The verdict of the oracle's exit review (see _review_open_trades), if it says exit."""
        return self._schedule.verdict(trade.id) if self._schedule is not None else None

    def _risk_of(self, trade: Trade) -> _TradeRisk | None:
        if trade.id not in self._trade_risk:  # e.g. after a restart: read what was persisted
            decision = trade.get_custom_data(_ORACLE_KEY)
            self._trade_risk[trade.id] = self._risk_from(trade, decision) if decision else None
        return self._trade_risk[trade.id]

    def _tick_distance(self, trade: Trade) -> float:
        """The pair's price tick as a fraction of the open price (0 if the market has none)."""
        tick = self._ticks.get(trade.pair)
        if tick is None:
            precision = trade.price_precision
            if precision is None:
                tick = 0.0
            elif trade.precision_mode_price == TICK_SIZE:
                tick = float(precision)
            else:
                tick = 10.0 ** -float(precision)
            self._ticks[trade.pair] = tick
        return tick / trade.open_rate if trade.open_rate else 0.0

    @_fail_closed(None, "no take-profit exit until the rule can be computed; the stops stay")
    def custom_roi(
        self,
        pair: str,
        trade: Trade,
        current_time: datetime,
        trade_duration: int,
        entry_tag: str | None,
        side: str,
        **kwargs: Any,
    ) -> float | None:
        info = self._risk_of(trade)
        fee_close = trade.fee_close if trade.fee_close is not None else trade.fee_open
        if self._live:
            # Live the exit may fill as taker whatever was estimated at entry: assume the worse.
            fee_close = max(fee_close, self._fees(pair).taker)
        return risk.roi_ratio(
            self.money,
            trade.fee_open,
            fee_close,
            trade.leverage,
            info.take_profit if info else None,
            Side(side),
            self._tick_distance(trade),
        )

    @_fail_closed(None, "keeping the current stop (never looser than the hard stop)")
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
        info = self._risk_of(trade)
        if info is None:
            return None  # the hard stoploss stays in force
        side = _side_of(trade)
        stop = info.stop
        fee_ratio = (trade.fee_open + (trade.fee_close or trade.fee_open)) * trade.leverage
        trail_from = self.money.trailing_start_fee_multiple * fee_ratio
        if info.atr > 0 and current_profit >= trail_from:
            trail = risk.trailing_price(
                current_rate, info.atr, self.money.trailing_atr_multiplier, side
            )
            stop = risk.tighter(stop, trail, side)
        stop = risk.respect_liquidation(
            stop, trade.liquidation_price, self.money.liquidation_buffer, side
        )
        if after_fill and trade.stop_loss:
            # An after-fill answer may move the stop both ways (Freqtrade refreshes it): after a
            # partial exit or a late fee, keep a stop that already trailed tighter.
            stop = risk.tighter(stop, trade.stop_loss, side)
        # Relative to the current rate, on margin. Freqtrade only ever tightens a stop, so this
        # can never loosen the hard stoploss.
        relative = stoploss_from_absolute(
            stop, current_rate, is_short=trade.is_short, leverage=trade.leverage
        )
        return relative or None


def _without_paid_calls(block: Any) -> Any:
    """The oracle block as hyperopt uses it: never a paid call.

    Every epoch moves the pre-filter's thresholds and so asks about candidates nobody recorded;
    with Gemini that would bill thousands of calls per hyperopt run. Hyperopt replays what the
    journal holds and answers the rest with `hold` (`rules` decisions are free and local, so a
    `call:rules` miss policy stays as configured).
    """
    if not isinstance(block, dict):
        return block
    replay = dict(block.get("replay") or {})
    backend = block.get("backend", "replay")
    if backend == "gemini":
        replay["source"] = "gemini"
    if backend == "gemini" or str(replay.get("on_miss", "")).startswith("call:gemini"):
        logger.warning(
            "hyperopt never calls Gemini: recorded decisions are replayed, misses answer hold"
        )
        replay["on_miss"] = "hold"
        return {**block, "backend": "replay", "replay": replay}
    return block


def _credentials(config: dict[str, Any]) -> list[str | None]:
    """Every secret Freqtrade's config still holds (it drops the exchange's before loading us)."""
    exchange = config.get("exchange") or {}
    api = config.get("api_server") or {}
    telegram = config.get("telegram") or {}
    ws_tokens = api.get("ws_token")
    tokens = ws_tokens if isinstance(ws_tokens, list) else [ws_tokens]  # Freqtrade takes both
    return [
        exchange.get("key"),
        exchange.get("secret"),
        exchange.get("password"),
        api.get("password"),
        api.get("jwt_secret_key"),
        *(str(t) for t in tokens if t),
        telegram.get("token"),
    ]


def _source_name(oracle: Oracle, outcome: Outcome) -> str:
    """Who answered, for messages: the backend's name for a fresh call (e.g. gemini)."""
    if outcome.source is DecisionSource.BACKEND:
        return oracle.backend.identity.name
    return outcome.source.value


def _confirms(request: Any, decision: Any, threshold: float) -> bool:
    """An entry: the oracle takes the candidate's side, confidently enough, with a stop."""
    agrees = decision.action is Action(request.candidate.value)
    return agrees and decision.confidence >= threshold and decision.stop_loss is not None


def _side_of(trade: Trade) -> Side:
    return Side.SHORT if trade.is_short else Side.LONG


def _closed(trade: Trade) -> ClosedTrade:
    return ClosedTrade(
        trade_id=trade.id,
        pair=trade.pair,
        side=_side_of(trade),
        close_time=trade.close_date_utc,
        exit_price=float(trade.close_rate or 0.0),
        profit=float(trade.close_profit_abs or 0.0),
        exit_reason=trade.exit_reason or "",
    )


def _lock_all(lock: Lock) -> None:
    """Block entries on every pair from `lock.start` (candle time in backtests) to `lock.until`.

    Freqtrade rounds a lock's end up to the next candle; one second earlier lands exactly on
    `until` when it is a candle boundary (midnight for the daily loss).
    """
    PairLocks.lock_pair("*", lock.until - timedelta(seconds=1), lock.reason, now=lock.start)


def _refusal_text(refusals: Counter[str]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(refusals.items())) or "none"


def _lock_kind(reason: str) -> str:
    text = reason.lower()
    if " passed " in text:  # Freqtrade's MaxDrawdown: "<dd> passed <max> in <lookback>"
        return "max drawdown"
    for kind in ("daily loss", "consecutive stop-losses", "cooldown"):
        if kind in text:
            return kind
    return reason
