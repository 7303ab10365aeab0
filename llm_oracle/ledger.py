"""The loss ledger behind the account-wide locks and the re-entry rule, rebuilt from closed trades.

Three pieces of state decide whether the next entry may happen: the day's realised P&L (daily
loss limit), the streak of losing stop-loss exits (pause after N in a row) and the last exit per
pair (re-entry only at a better price after a profitable exit). Kept only in memory, a restart or
`/reload_config` would forget them mid-day; so the ledger is a pure function of the closed trades
and can be rebuilt from what Freqtrade persisted. Feeding the same exits one by one
(`record_exit`, the backtest and live path) and all at once (`rebuild`, the restart path) gives
the same state; tests check that.

No Freqtrade import: the strategy turns its `Trade` objects into `ClosedTrade` records and applies
the `Lock`s this returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict

from llm_oracle.models import Side
from llm_oracle.risk import MoneyRules, reentry_allowed

# Freqtrade's exit reasons that mean "the stop was hit" (ExitType values), liquidation included:
# a liquidation is a stop the exchange placed for us.
STOP_EXIT_REASONS = frozenset(
    {"stop_loss", "stoploss_on_exchange", "trailing_stop_loss", "liquidation"}
)


class ClosedTrade(BaseModel):
    """One finished (fully exited) trade, as the ledger needs it."""

    model_config = ConfigDict(frozen=True)
    trade_id: int | None = None  # one exit per trade; also orders exits closed at one moment
    pair: str
    side: Side
    close_time: AwareDatetime
    exit_price: float
    profit: float  # realised, in stake currency, net of fees and funding
    exit_reason: str

    @property
    def losing_stop(self) -> bool:
        return self.exit_reason in STOP_EXIT_REASONS and self.profit < 0


class Lock(NamedTuple):
    """Block entries on every pair from `start` until `until` (the strategy applies it)."""

    start: datetime
    until: datetime
    reason: str


class LastExit(NamedTuple):
    price: float
    profitable: bool
    time: datetime


def utc_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


class LossLedger:
    """Daily P&L, the losing-stop streak and the last exit per pair.

    `locks_on` mirrors Freqtrade's switch for protections (always live, opt-in in backtests): with
    it off the ledger still remembers exits for the re-entry rule but never asks for a lock.
    """

    def __init__(self, rules: MoneyRules, *, locks_on: bool) -> None:
        self.rules = rules
        self.locks_on = locks_on
        self.day: datetime | None = None
        self.day_start_equity = 0.0
        self.day_pnl = 0.0
        self.stop_streak = 0
        self.last_exits: dict[str, LastExit] = {}
        # Freqtrade may report the same exit again (live, it retries a fill whose fee is not
        # known yet, and order_filled comes with it): a trade is accounted for once.
        self._recorded: set[int] = set()
        # The locks the exits fed to `rebuild` triggered, for `locks_due`.
        self._replayed_locks: list[Lock] = []

    def record_exit(self, trade: ClosedTrade, equity: float) -> list[Lock]:
        """Account for one exit; `equity` is the account equity before this exit's P&L.

        Returns the locks this exit triggers (none when protections are off, and none for a
        trade already recorded).
        """
        if trade.trade_id is not None:
            if trade.trade_id in self._recorded:
                return []
            self._recorded.add(trade.trade_id)
        self.last_exits[trade.pair] = LastExit(trade.exit_price, trade.profit > 0, trade.close_time)
        if not self.locks_on:
            return []
        p = self.rules.protections
        now = trade.close_time
        day = utc_day(now)
        if day != self.day:
            self.day, self.day_pnl, self.day_start_equity = day, 0.0, equity
        self.day_pnl += trade.profit
        locks: list[Lock] = []
        if p.daily_loss and self.day_pnl <= -p.daily_loss * self.day_start_equity:
            reason = f"daily loss limit {p.daily_loss:.0%} reached"
            locks.append(Lock(now, day + timedelta(days=1), reason))
        self.stop_streak = self.stop_streak + 1 if trade.losing_stop else 0
        if p.consecutive_stoplosses and self.stop_streak >= p.consecutive_stoplosses:
            until = now + timedelta(hours=p.stoploss_pause_hours)
            locks.append(Lock(now, until, f"{self.stop_streak} consecutive stop-losses: pause"))
            self.stop_streak = 0
        return locks

    @classmethod
    def rebuild(
        cls,
        rules: MoneyRules,
        trades: Iterable[ClosedTrade],
        equity_now: float,
        now: datetime,
        *,
        locks_on: bool,
    ) -> LossLedger:
        """The ledger as it stood after `trades` (any order), for a bot (re)starting at `now`.

        The locks those exits triggered are not returned: Freqtrade persisted them. The day's
        starting equity is today's equity minus today's realised P&L, which is what the
        one-by-one path measured before the day's first exit.
        """
        ledger = cls(rules, locks_on=locks_on)
        ordered = sorted(trades, key=lambda t: (t.close_time, t.trade_id or 0))
        today = utc_day(now)
        start_equity = equity_now - sum(t.profit for t in ordered if utc_day(t.close_time) == today)
        for trade in ordered:
            ledger._replayed_locks += ledger.record_exit(trade, start_equity)
        if ledger.day != today:  # nothing closed today yet: the day starts now
            ledger.day, ledger.day_pnl, ledger.day_start_equity = today, 0.0, equity_now
        return ledger

    def locks_due(self, now: datetime) -> list[Lock]:
        """The locks of a rebuilt ledger's exits that still run at `now`.

        Freqtrade persists the locks it was given, so a restart needs none of these; they are
        for an exit whose own lock was never applied (its fill callback failed).
        """
        return [lock for lock in self._replayed_locks if lock.until > now]

    def reentry_allowed(self, pair: str, side: Side, rate: float, now: datetime) -> bool:
        last = self.last_exits.get(pair)
        if last is None:
            return True
        return reentry_allowed(side, rate, last.price, last.profitable, last.time, now, self.rules)
