"""Harness: the real `freqtrade trade` in LIVE mode (dry_run false) against the Bybit emulator.

The emulator runs in this process (so a test reads its orders, positions and wallet directly and
steers its prices); Freqtrade runs as a subprocess on a sqlite trades DB in the test's directory,
with the API key and secret passed only through FREQTRADE__EXCHANGE__KEY / __SECRET.

The candle feed is the real BTC sample, shifted so that a pre-filter candidate the `rules` oracle
confirms is the newest closed candle right now. The feed's clock is then *held* just before the
next candle would close, so the candidate stays the newest closed candle for as long as Freqtrade
accepts it (its own staleness check: about 6 minutes) and a test never waits for a candle
boundary. `LiveBot.release_clock()` lets the feed follow the wall clock again. Private-API
timestamps (orders, fills) always use the real clock.

    with live_bot(tmp_path) as bot:                 # emulator up, bot started
        bot.pin_price()                             # freeze BTC at the feed's current price
        trade = bot.wait_until(bot.open_trade, 60, "an open trade")
        stop = bot.wait_until(bot.exchange_stop_order, 10, "a stop on the exchange")
        bot.set_price(Decimal(stop["triggerPrice"]) * Decimal("0.99"))
        bot.wait_until(lambda: bot.closed_trades(), 20, "the stop to close the trade")
        bot.restart()                               # SIGTERM + start on the same DB and emulator
"""

from __future__ import annotations

import functools
import json
import secrets
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from bybit_emulator import AccountConfig, CandleSource, Emulator, RequestRecord, start_emulator
from tests.factories import DATA_DIR, strategy_class
from tests.freqtrade_run import freqtrade_argv, loopback_env, offline_overlay, prepare_run

T = TypeVar("T")

STEP_MS = 180_000
PAIR = "BTC/USDT:USDT"
SYMBOL = "BTCUSDT"
BTC_TICK = Decimal("0.1")  # the emulator's (and Bybit's) price tick for BTCUSDT
# The feed's clock stops this long before the candle after the candidate would close.
HOLD_MARGIN_MS = 10_000
# Time left in the entry candle when a bot starts: start-up and the first loop fit well inside.
MIN_ENTRY_WINDOW_MS = 75_000


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `predicate` until it returns something truthy (returned) or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# ---- the candidate candle and the feed ------------------------------------------------------


@functools.cache
def strategy_candidates() -> pd.DataFrame:
    """The strategy's own indicators and pre-filter over the BTC sample (long_c / short_c)."""
    GeminiOracleStrategy = strategy_class()
    strategy = GeminiOracleStrategy({"runmode": "dry_run", "stake_currency": "USDT"})
    frame = pd.read_feather(DATA_DIR / "BTC_USDT_USDT-3m-futures.feather")
    frame = strategy.populate_indicators(frame, {"pair": PAIR})
    long_c, short_c = strategy._candidates(frame)
    frame["long_c"], frame["short_c"] = long_c, short_c
    return frame


@dataclass(frozen=True)
class Candidate:
    row: int
    side: str  # "long" | "short"
    confidence: float
    start_ms: int  # data time of the candidate candle's open
    close: float
    next_close: float  # the forming candle's close: the feed's price while the clock is held


@functools.cache
def confirmed_candidate(min_row: int = 2500, min_confidence: float = 0.7) -> Candidate:
    """The first pre-filter candidate after `min_row` the `rules` oracle confirms.

    `min_row` leaves Freqtrade's 1200 startup candles (and more) before it, as live; 0.7 keeps
    clear of the strategy's default 0.6 threshold.
    """
    from llm_oracle.backends.rules import RulesBackend
    from llm_oracle.features import entry_requests
    from llm_oracle.models import Action, Fees, Side

    frame = strategy_candidates()
    rows = frame.index[(frame["long_c"] | frame["short_c"]) & (frame.index > min_row)]
    backend = RulesBackend()
    fees = Fees(maker=0.0002, taker=0.00055)
    for row in rows:
        side = Side.LONG if frame["long_c"].iat[row] else Side.SHORT
        for _, request in entry_requests(
            frame, [int(row)], [side], fees, timeframe="3m", n_candles=24
        ):
            decision = backend.decide_now(request)
            if decision.action is Action(side.value) and decision.confidence >= min_confidence:
                return Candidate(
                    row=int(row),
                    side=side.value,
                    confidence=decision.confidence,
                    start_ms=int(frame["date"].iat[row].timestamp() * 1000),
                    close=float(frame["close"].iat[row]),
                    next_close=float(frame["close"].iat[row + 1]),
                )
    raise LookupError("no confirmed candidate in the BTC sample")


class FeedClock:
    """The candle feed's clock: the wall clock, held at `hold_ms` until released.

    `signal_close_ms` is the wall-clock time the candidate candle closes: it may lie up to
    MIN_ENTRY_WINDOW_MS ahead when a bot starts, and no entry can happen before it.
    """

    def __init__(self, hold_ms: int | None, signal_close_ms: int = 0) -> None:
        self.hold_ms = hold_ms
        self.signal_close_ms = signal_close_ms

    def until_signal(self) -> float:
        """Seconds until the candidate candle closes (0 once it has)."""
        return max(0.0, self.signal_close_ms / 1000 - time.time())

    def __call__(self) -> float:
        now = time.time()
        return now if self.hold_ms is None else min(now, self.hold_ms / 1000)

    def release(self) -> None:
        self.hold_ms = None


def candidate_feed(
    candidate: Candidate, now_ms: int | None = None, data_dir: Path = DATA_DIR
) -> tuple[CandleSource, FeedClock]:
    """The BTC sample shifted so `candidate` closed at the start of the current 3m period.

    The shift is a whole number of candles (so candle times stay on the 3m grid), and the clock
    is held before the next candle closes: the candidate stays the newest closed candle.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    boundary = now - now % STEP_MS
    if boundary + STEP_MS - now < MIN_ENTRY_WINDOW_MS:
        # Freqtrade's own clock keeps running while the feed is held: the entry must happen in
        # the candle after the signal, or the decision behind it is not found (the bot then
        # falls back to 1x and the hard stop). Too close to the next boundary: let the
        # candidate close at that boundary instead.
        boundary += STEP_MS
    clock = FeedClock(boundary + STEP_MS - HOLD_MARGIN_MS, signal_close_ms=boundary)
    shift = boundary - STEP_MS - candidate.start_ms
    return CandleSource(data_dir, shift_ms=shift, clock=clock), clock


# ---- the bot ----------------------------------------------------------------------------------


def live_overlay(emulator_url: str, workdir: Path, **extra: Any) -> dict[str, Any]:
    """The offline overlay for a live run: no keys (they come from the environment).

    Orders, stops and timeouts are config.json's own (`order_types`, `unfilledtimeout`): what
    these tests prove is what ships.
    """
    overlay = offline_overlay(
        emulator_url,
        dry_run=False,
        db_url=f"sqlite:///{workdir / 'trades.sqlite'}",
        internals={"process_throttle_secs": 1, "heartbeat_interval": 60},
        llm_oracle={"backend": "rules", "journal_path": str(workdir / "journal.sqlite")},
    )
    overlay["exchange"]["pair_whitelist"] = [PAIR]
    # No fiat conversion: it would ask api.coingecko.com, and tests stay on 127.0.0.1.
    overlay["fiat_display_currency"] = ""
    for key, value in extra.items():
        overlay[key] = value
    return overlay


def _rows(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args).fetchall()]
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return []
    finally:
        conn.close()


class LiveBot:
    """One live Freqtrade process (restartable) on one emulator account and one trades DB."""

    def __init__(
        self,
        workdir: Path,
        emulator: Emulator,
        account: AccountConfig,
        overlay: dict[str, Any],
        *,
        candidate: Candidate | None = None,
        clock: FeedClock | None = None,
    ) -> None:
        self.workdir = workdir
        self.emulator = emulator
        self.account = account
        self.candidate = candidate
        self.clock = clock
        self.userdir, self.overlay_path = prepare_run(workdir, overlay)
        self.db_path = workdir / "trades.sqlite"
        # Freqtrade's own log file (--logfile, standard format) and the process's raw output.
        self.log_path = workdir / "freqtrade.log"
        self.console_path = workdir / "console.log"
        self.emulator_log = workdir / "emulator.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.extra_env: dict[str, str] = {}  # e.g. GEMINI_API_KEY for a fake Gemini
        self.strategy_path: Path | None = None  # a test's strategy folder (the last flag wins)

    # ---- process ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start `freqtrade trade` (live), logging to `log_path`, output to `console_path`.

        Logging is set up exactly as for a user: from config.json's `log_config` (which redacts
        credentials). Freqtrade skips that under pytest (PYTEST_VERSION), so it is removed here.
        """
        if self.running:
            raise RuntimeError("the bot is already running")
        self.starts += 1
        env = loopback_env(
            FREQTRADE__EXCHANGE__KEY=self.account.key,
            FREQTRADE__EXCHANGE__SECRET=self.account.secret,
            **self.extra_env,
        )
        env.pop("PYTEST_VERSION", None)
        with self.console_path.open("ab") as log:
            log.write(f"==== harness: start #{self.starts} ====\n".encode())
            log.flush()
            argv = freqtrade_argv("trade", self.overlay_path, self.userdir, None)
            if self.strategy_path is not None:
                argv += ["--strategy-path", str(self.strategy_path)]
            self.proc = subprocess.Popen(
                [*argv, "--logfile", str(self.log_path)],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (Freqtrade's clean shutdown, exit code 130); kill -9 after `timeout` s."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> int | None:
        """kill -9: no cleanup, open orders stay on the exchange."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def restart(self, *, hard: bool = False) -> None:
        """Stop (SIGTERM, or kill -9 when `hard`) and start again on the same DB and emulator."""
        self.kill() if hard else self.stop()
        self.start()

    def log(self) -> str:
        """Freqtrade's log file, all runs."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def console(self) -> str:
        """Everything the process printed (tracebacks of a crash land only here)."""
        path = self.console_path
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, needle: str, timeout: float) -> str:
        return self.wait_until(lambda: needle in self.log() and self.log(), timeout, repr(needle))

    def wait_until(
        self, predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2
    ) -> T:
        """`wait_until`, failing early if the bot process died; either failure shows the log tail
        (CI keeps no work directory, so the tail is all there is to read)."""

        def check() -> T:
            value = predicate()
            if not value and self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"freqtrade exited ({self.proc.returncode}) while waiting for {what}:\n"
                    + self.log()[-4000:]
                )
            return value

        try:
            return wait_until(check, timeout, what, interval)
        except AssertionError as failure:
            if "freqtrade exited" in str(failure):
                raise
            raise AssertionError(f"{failure}; the bot's log ends:\n{self.log()[-4000:]}") from None

    # ---- the trades DB -----------------------------------------------------------------------

    def trades(self) -> list[dict[str, Any]]:
        return _rows(self.db_path, "SELECT * FROM trades ORDER BY id")

    def open_trade(self) -> dict[str, Any] | None:
        """The open trade whose entry has filled (amount > 0), if any."""
        rows = _rows(self.db_path, "SELECT * FROM trades WHERE is_open = 1 AND amount > 0")
        return rows[0] if rows else None

    def closed_trades(self) -> list[dict[str, Any]]:
        return _rows(self.db_path, "SELECT * FROM trades WHERE is_open = 0 ORDER BY id")

    def pair_locks(self, *, active_only: bool = True) -> list[dict[str, Any]]:
        sql = "SELECT * FROM pairlocks" + (" WHERE active = 1" if active_only else "")
        return _rows(self.db_path, sql + " ORDER BY id")

    def orders(self) -> list[dict[str, Any]]:
        return _rows(self.db_path, "SELECT * FROM orders ORDER BY id")

    # ---- the exchange ------------------------------------------------------------------------

    def exchange_state(self) -> dict[str, Any]:
        return self.emulator.state()["accounts"][self.account.label]

    def exchange_orders(self, symbol: str = SYMBOL) -> list[dict[str, Any]]:
        return [o for o in self.exchange_state()["orders"] if o["symbol"] == symbol]

    def exchange_stop_order(self, symbol: str = SYMBOL) -> dict[str, Any] | None:
        """The newest conditional order of `symbol` still waiting for its trigger."""
        waiting = [
            o
            for o in self.exchange_orders(symbol)
            if o["stopOrderType"] == "Stop" and o["orderStatus"] == "Untriggered"
        ]
        return waiting[-1] if waiting else None

    def exit_limit_order(self, symbol: str = SYMBOL) -> dict[str, Any] | None:
        """The newest reduce-only limit order of `symbol` (a take-profit exit), if any.

        It may have filled already: a limit at the touch fills as maker on the next match."""
        exits = [
            o
            for o in self.exchange_orders(symbol)
            if o["reduceOnly"] and o["orderType"] == "Limit" and not o["stopOrderType"]
        ]
        return exits[-1] if exits else None

    def entry_order(self, symbol: str = SYMBOL) -> dict[str, Any] | None:
        """The first order of `symbol` that opens a position (not reduce-only), if any."""
        return next((o for o in self.exchange_orders(symbol) if not o["reduceOnly"]), None)

    def after_signal(self, timeout: float) -> float:
        """`timeout` counted from the candidate candle's close (which may still lie ahead)."""
        return timeout + (self.clock.until_signal() if self.clock is not None else 0.0)

    def wait_for_entry_order(self, timeout: float = 60) -> dict[str, Any]:
        """The entry order, `timeout` s after the candidate candle closed at the latest."""
        return self.wait_until(
            self.entry_order, self.after_signal(timeout), "the entry order on the exchange"
        )

    def fill_entry(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Wait for the entry order, touch its limit (a maker fill), wait for Freqtrade's trade.

        Returns the exchange's entry order and the trade row.
        """
        entry = self.wait_for_entry_order()
        self.set_price(entry["price"])
        trade = self.wait_until(self.open_trade, 20, "Freqtrade to record the filled entry")
        return entry, trade

    def run_through(self, stop: dict[str, Any], trade: dict[str, Any]) -> None:
        """Move the price 0.2% past `stop`'s trigger, against `trade`."""
        past = Decimal("1.002") if trade["is_short"] else Decimal("0.998")
        self.set_price(Decimal(stop["triggerPrice"]) * past)

    def exchange_position(self, symbol: str = SYMBOL) -> dict[str, Any] | None:
        found = [p for p in self.exchange_state()["positions"] if p["symbol"] == symbol]
        return found[0] if found else None

    def exchange_balance(self) -> Decimal:
        return Decimal(self.exchange_state()["walletBalance"])

    def price(self, symbol: str = SYMBOL) -> Decimal:
        prices = self.emulator.prices(symbol)
        if prices is None:
            raise LookupError(f"no price for {symbol}")
        return prices.last

    def set_price(
        self,
        last: Decimal | str | float,
        mark: Decimal | str | float | None = None,
        *,
        symbol: str = SYMBOL,
    ) -> None:
        """Override last (and mark/index, default = last) until `clear_price`."""
        self.emulator.set_price(symbol, last, mark)

    def pin_price(self, symbol: str = SYMBOL) -> Decimal:
        """Freeze `symbol` at the feed's current price; returns it."""
        price = self.price(symbol)
        self.set_price(price, symbol=symbol)
        return price

    def clear_price(self, symbol: str = SYMBOL) -> None:
        self.emulator.set_price(symbol, None)

    def release_clock(self) -> None:
        """Let the candle feed follow the wall clock again (new candles appear)."""
        if self.clock is not None:
            self.clock.release()

    def private_requests(self) -> list[RequestRecord]:
        return [r for r in self.emulator.requests if not r["path"].startswith("/v5/market/")]

    def secrets_found(self) -> list[str]:
        """Where the API key or secret shows up: logs, trades DB, journal (want: none)."""
        found = []
        journal = self.workdir / "journal.sqlite"
        for path in (self.log_path, self.console_path, self.emulator_log, self.db_path, journal):
            if not path.exists():
                continue
            data = path.read_bytes()
            for label, value in (("key", self.account.key), ("secret", self.account.secret)):
                if value.encode() in data:
                    found.append(f"{label} in {path.name}")
        return found


@contextmanager
def live_bot(
    workdir: Path,
    *,
    balance: Decimal = Decimal("10000"),
    start: bool = True,
    candidate: Candidate | None = None,
    data_dir: Path = DATA_DIR,
    pairs: list[str] | None = None,
    env: dict[str, str] | None = None,
    strategy_path: Path | None = None,
    **overlay_extra: Any,
) -> Iterator[LiveBot]:
    """An emulator (wall-clock feed at the candidate, one account, test control on) and a live
    bot configured against it; the bot is started unless `start=False`, and stopped at exit.

    `data_dir` and `pairs` serve other candles (e.g. several pairs built from the BTC sample, so
    they all signal on the candidate's candle) and trade those pairs."""
    chosen = candidate or confirmed_candidate()
    source, clock = candidate_feed(chosen, data_dir=data_dir)
    account = AccountConfig(
        key=f"ftlive{secrets.token_hex(8)}",
        secret=secrets.token_hex(20),
        balance=balance,
        name="bot",
    )
    with start_emulator(
        candles=source,
        accounts=[account],
        test_control=True,
        log_path=workdir / "emulator.jsonl",
    ) as emulator:
        overlay = live_overlay(emulator.url, workdir, **overlay_extra)
        if pairs is not None:
            overlay["exchange"]["pair_whitelist"] = pairs
        bot = LiveBot(workdir, emulator, account, overlay, candidate=chosen, clock=clock)
        bot.extra_env = dict(env or {})
        bot.strategy_path = strategy_path
        try:
            if start:
                bot.start()
            yield bot
        finally:
            bot.stop()


def request_index(records: list[RequestRecord], predicate: Callable[[RequestRecord], bool]) -> int:
    """Position of the first record matching `predicate` (-1 if none)."""
    return next((i for i, r in enumerate(records) if predicate(r)), -1)


def body(record: RequestRecord) -> dict[str, Any]:
    value = record.get("body")
    return value if isinstance(value, dict) else json.loads(value) if value else {}
