"""The loss ledger: one exit at a time (backtest and live) equals a rebuild from closed trades."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from llm_oracle.ledger import ClosedTrade, LossLedger, utc_day
from llm_oracle.models import Side
from llm_oracle.risk import MoneyRules

RULES = MoneyRules()
DAY = datetime(2025, 6, 3, tzinfo=UTC)


def closed(
    minutes: float, profit: float, reason: str = "stop_loss", pair: str = "BTC/USDT:USDT"
) -> ClosedTrade:
    return ClosedTrade(
        pair=pair,
        side=Side.LONG,
        close_time=DAY + timedelta(minutes=minutes),
        exit_price=100.0,
        profit=profit,
        exit_reason=reason,
    )


def test_three_losing_stops_in_a_row_pause_entries_for_four_hours() -> None:
    ledger = LossLedger(RULES, locks_on=True)
    assert ledger.record_exit(closed(10, -10), 10_000) == []
    assert ledger.record_exit(closed(20, -10, "stoploss_on_exchange"), 10_000) == []
    [lock] = ledger.record_exit(closed(30, -10, "trailing_stop_loss"), 10_000)
    assert lock.start == DAY + timedelta(minutes=30)
    assert lock.until == lock.start + timedelta(hours=4)
    assert "3 consecutive stop-losses" in lock.reason
    assert ledger.stop_streak == 0  # the pause consumed the streak


def test_a_win_or_a_non_stop_exit_breaks_the_streak() -> None:
    ledger = LossLedger(RULES, locks_on=True)
    ledger.record_exit(closed(10, -10), 10_000)
    ledger.record_exit(closed(20, -10), 10_000)
    ledger.record_exit(closed(30, 5, "roi"), 10_000)
    assert ledger.stop_streak == 0
    ledger.record_exit(closed(40, -10), 10_000)
    ledger.record_exit(closed(50, 2, "stop_loss"), 10_000)  # a stop in profit is no loss
    assert ledger.stop_streak == 0


def test_daily_loss_locks_until_midnight_and_resets_the_next_day() -> None:
    ledger = LossLedger(RULES, locks_on=True)
    assert ledger.record_exit(closed(60, -400, "roi"), 10_000) == []
    [lock] = ledger.record_exit(closed(120, -101, "roi"), 9_600)
    assert lock.until == DAY + timedelta(days=1)
    assert "daily loss" in lock.reason
    # A new day measures from that day's equity and P&L.
    assert ledger.record_exit(closed(24 * 60 + 5, -100, "roi"), 9_499) == []
    assert ledger.day == DAY + timedelta(days=1) and ledger.day_pnl == -100


def test_locks_off_still_remembers_exits_for_the_reentry_rule() -> None:
    ledger = LossLedger(RULES, locks_on=False)
    for minute in (10, 20, 30, 40):
        assert ledger.record_exit(closed(minute, -1000), 10_000) == []
    ledger.record_exit(closed(50, 30, "roi"), 10_000)
    at = DAY + timedelta(minutes=53)
    assert not ledger.reentry_allowed("BTC/USDT:USDT", Side.LONG, 100.0, at)
    assert ledger.reentry_allowed("BTC/USDT:USDT", Side.LONG, 99.7, at)
    assert ledger.reentry_allowed("ETH/USDT:USDT", Side.LONG, 100.0, at)
    assert ledger.reentry_allowed("BTC/USDT:USDT", Side.LONG, 100.0, at + timedelta(hours=13))


def test_rebuild_after_two_stops_and_a_four_percent_loss_keeps_both_rules_armed() -> None:
    """The restart the issue describes: a bot restarted mid-day must not forget either."""
    history = [closed(10, -150), closed(20, -250, "stoploss_on_exchange")]
    now = DAY + timedelta(hours=2)
    ledger = LossLedger.rebuild(RULES, history, 10_000 - 400, now, locks_on=True)
    assert ledger.stop_streak == 2
    assert ledger.day_pnl == -400 and ledger.day_start_equity == 10_000
    locks = ledger.record_exit(closed(130, -110), 9_600)
    reasons = sorted(lock.reason for lock in locks)
    assert reasons == ["3 consecutive stop-losses: pause", "daily loss limit 5% reached"]


def test_rebuild_on_a_quiet_day_starts_the_day_at_current_equity() -> None:
    ledger = LossLedger.rebuild(
        RULES, [closed(10, -300)], 9_700, DAY + timedelta(days=1, hours=3), locks_on=True
    )
    assert ledger.day == DAY + timedelta(days=1)
    assert ledger.day_pnl == 0 and ledger.day_start_equity == 9_700
    assert ledger.stop_streak == 1


reasons = st.sampled_from(["stop_loss", "stoploss_on_exchange", "roi", "exit_signal"])
exits = st.lists(
    st.tuples(st.floats(0, 3 * 24 * 60), st.floats(-300, 300), reasons), min_size=1, max_size=30
)


@settings(max_examples=200, deadline=None)
@given(exits)
def test_rebuild_equals_one_exit_at_a_time(rows: list[tuple[float, float, str]]) -> None:
    made = [closed(m, p, r).model_copy(update={"trade_id": i}) for i, (m, p, r) in enumerate(rows)]
    trades = sorted(made, key=lambda t: (t.close_time, t.trade_id))
    now = trades[-1].close_time  # the bot restarts right after the last exit
    start = 10_000.0
    live = LossLedger(RULES, locks_on=True)
    equity = start
    locks = []
    for trade in trades:
        # One by one, the day's base is the equity before its first exit.
        locks += live.record_exit(trade, equity)
        equity += trade.profit
    rebuilt = LossLedger.rebuild(RULES, reversed(trades), equity, now, locks_on=True)
    # An exit whose own locks were lost (failed fill callback) gets them back from the rebuild.
    assert rebuilt.locks_due(now) == [lock for lock in locks if lock.until > now]
    assert rebuilt.stop_streak == live.stop_streak
    assert rebuilt.last_exits == live.last_exits
    assert rebuilt.day == live.day == utc_day(now)
    assert abs(rebuilt.day_pnl - live.day_pnl) < 1e-6
    assert abs(rebuilt.day_start_equity - live.day_start_equity) < 1e-6


def test_an_exit_reported_twice_is_accounted_for_once() -> None:
    """Live, Freqtrade reports a fill again while its fee is unknown; order_filled comes along."""
    ledger = LossLedger(RULES, locks_on=True)
    stop = closed(10, -300).model_copy(update={"trade_id": 7})
    assert ledger.record_exit(stop, 10_000) == []
    assert ledger.record_exit(stop, 10_000) == []
    assert ledger.day_pnl == -300 and ledger.stop_streak == 1
    rebuilt = LossLedger.rebuild(RULES, [stop], 9_700, stop.close_time, locks_on=True)
    assert rebuilt.record_exit(stop, 9_700) == []  # the restart counted it already
    assert rebuilt.day_pnl == -300 and rebuilt.stop_streak == 1
