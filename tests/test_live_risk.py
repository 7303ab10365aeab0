"""Live risk state and credentials, with the real `freqtrade trade` (dry_run false).

The loss ledger must survive a restart: a bot that lost two stops (4% of its equity) earlier in
the day, then restarted, still pauses after the third losing stop and still locks the day when
the loss passes 5%. A wrong key or secret stops the bot before any order, naming the cause.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.factories import ROOT
from tests.live_bot import live_bot, wait_until

pytestmark = pytest.mark.integration


def seed_closed_trades(db: Path, trades: list[dict]) -> None:
    subprocess.run(
        [sys.executable, "-m", "tests.seed_trades", f"sqlite:///{db}", json.dumps(trades)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )


def earlier_today(now: datetime, minutes: int) -> datetime:
    """`minutes` ago, but never before today's UTC midnight (tests may run just after it)."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    wanted = max(now - timedelta(minutes=minutes), midnight + timedelta(seconds=minutes))
    return min(wanted, now - timedelta(seconds=1))  # never in the future


def losing_stop(now: datetime, minutes_ago: int, loss: float) -> dict:
    closed = earlier_today(now, minutes_ago)
    # ETH, not the pair the bot trades: Freqtrade's per-pair cooldown must not block the entry.
    return {
        "pair": "ETH/USDT:USDT",
        "stake_amount": 2000.0,
        "amount": 0.8,
        "open_rate": 2500.0,
        "close_rate": 2500.0 + loss / 0.8,
        "open_date": (closed - timedelta(minutes=30)).isoformat(),
        "close_date": closed.isoformat(),
        "profit": loss,
        "exit_reason": "stoploss_on_exchange",
    }


def locks(bot) -> list[dict]:
    """The strategy's account-wide locks (Freqtrade's own per-pair "Auto lock" aside)."""
    return [row for row in bot.pair_locks() if row["pair"] == "*"]


def test_restart_mid_day_keeps_the_stop_streak_and_the_daily_loss(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    # One open trade at a time: the stake is the whole equity, so the third stop loses about
    # 0.5% of it (the candidate's stop is tight); 4.9% lost before it makes the day pass 5%.
    with live_bot(tmp_path, start=False, max_open_trades=1) as bot:
        seed_closed_trades(
            bot.db_path, [losing_stop(now, 50, -255.0), losing_stop(now, 40, -255.0)]
        )
        bot.start()  # the restart: a new process on the trade history of the day
        bot.wait_for_log("risk ledger rebuilt from 2 closed trades", 60)
        # Equity is what Freqtrade may trade: 99% (tradable_balance_ratio) of the 10000 USDT
        # wallet, plus the day's 510 lost: the day started at 10410.
        assert "day P&L -510.00 of 10410.00, losing-stop streak 2" in bot.log()
        bot.pin_price()
        entry, trade = bot.fill_entry()
        assert locks(bot) == []  # two stops and -4.9%: nothing locked yet
        stop = bot.wait_until(bot.exchange_stop_order, 10, "a stop order on the exchange")
        bot.run_through(stop, trade)
        closed = bot.wait_until(
            lambda: [t for t in bot.closed_trades() if t["pair"] == "BTC/USDT:USDT"],
            30,
            "the third stop to close the trade",
        )
        assert closed[0]["exit_reason"] == "stoploss_on_exchange"
        loss = closed[0]["close_profit_abs"]
        assert loss < -10.5  # -510 - 10.5 passes 5% of the day's 10410
        found = bot.wait_until(lambda: len(locks(bot)) >= 2 and locks(bot), 20, "both locks")
        by_reason = {row["reason"]: row for row in found}
        pause = by_reason["3 consecutive stop-losses: pause"]
        daily = by_reason["daily loss limit 5% reached"]
        assert pause["pair"] == daily["pair"] == "*"
        close_time = datetime.fromisoformat(closed[0]["close_date"]).replace(tzinfo=UTC)
        pause_end = datetime.fromisoformat(pause["lock_end_time"]).replace(tzinfo=UTC)
        assert abs(pause_end - (close_time + timedelta(hours=4))) < timedelta(minutes=4)
        daily_end = datetime.fromisoformat(daily["lock_end_time"]).replace(tzinfo=UTC)
        midnight = close_time.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        assert timedelta(0) <= midnight - daily_end < timedelta(minutes=4)
        bot.stop()
    assert bot.secrets_found() == []


@pytest.mark.parametrize("wrong", ["key", "secret"])
def test_a_wrong_key_or_secret_stops_before_any_order(tmp_path: Path, wrong: str) -> None:
    with live_bot(tmp_path, start=False) as bot:
        real = bot.account
        if wrong == "key":
            bot.account = type(real)(key="ftliveWRONGKEY0000", secret=real.secret, name="x")
        else:
            bot.account = type(real)(key=real.key, secret="f" * 40, name="x")
        bot.start()
        wait_until(lambda: not bot.running, 120, "the bot to stop on bad credentials")
        log = bot.log()
        cause = "API key is invalid" if wrong == "key" else "error sign"
        assert cause in log, log[-3000:]
        assert [r for r in bot.emulator.requests if r["path"].startswith("/v5/order")] == []
        secrets_used = (bot.account.key, bot.account.secret, real.key, real.secret)
        journal = bot.workdir / "journal.sqlite"
        scanned = (bot.log_path, bot.console_path, bot.emulator_log, bot.db_path, journal)
        # Bybit's "error sign!" answer echoes the key: the log files must still not show it.
        for path in scanned:
            data = path.read_bytes() if path.exists() else b""
            assert not [s for s in secrets_used if s.encode() in data], path
        assert bot.log_path.exists() and bot.console_path.exists()
