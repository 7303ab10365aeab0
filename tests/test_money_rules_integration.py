"""Every money rule, proven by the real `freqtrade backtesting` on crafted candles.

Each scenario builds candle data that triggers one rule, runs Freqtrade as a subprocess against
the Bybit emulator with `--cache none`, and asserts on the exported result JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bybit_emulator import Emulator
from llm_oracle.models import Side
from llm_oracle.risk import fee_exit_ratio
from tests.crafted import STEP, wave, write_pair
from tests.freqtrade_run import FreqtradeRun, fees_paid, offline_overlay, run_freqtrade

pytestmark = pytest.mark.integration

N_CANDLES = 2600  # 1200 startup + ~3 days traded
WALLET = 10_000.0
UP = {"base": 100_000.0, "drift": 0.0002}
DOWN = {"base": 2_500.0, "drift": -0.0002}
CRASHING = {"drift": 0.00005, "crash_every": 24, "crash": 0.02}


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def crafted_backtest(
    emulator: Emulator,
    workdir: Path,
    pairs: dict[str, pd.DataFrame],
    *,
    money: dict[str, Any] | None = None,
    oracle: dict[str, Any] | None = None,
    extra: list[str] | None = None,
    config: dict[str, Any] | None = None,
) -> FreqtradeRun:
    datadir = workdir / "data" / "bybit"
    for coin, candles in pairs.items():
        write_pair(datadir, coin, candles)
    block = {"journal_path": str(workdir / "journal.sqlite"), "replay": {"on_miss": "call:rules"}}
    block.update(oracle or {})
    overlay = offline_overlay(emulator.url, llm_oracle=block, money_rules=money or {})
    overlay["exchange"]["pair_whitelist"] = [f"{coin}/USDT:USDT" for coin in pairs]
    overlay.update(config or {})
    first = min(c["date"].iloc[1200] for c in pairs.values())
    last = max(c["date"].iloc[-1] for c in pairs.values())
    run = run_freqtrade(
        "backtesting",
        [
            "--cache",
            "none",
            "--export",
            "trades",
            "--timerange",
            f"{int(first.timestamp())}-{int(last.timestamp())}",
            *(extra or []),
        ],
        workdir=workdir,
        overlay=overlay,
        datadir=datadir,
    )
    assert run.returncode == 0, run.output[-4000:]
    assert emulator.unexpected_requests() == []
    return run


def equity_before(trades: list[dict[str, Any]], moment: str) -> float:
    """Wallet equity when a trade opened: start plus everything closed before it."""
    at = _ts(moment)
    return WALLET + sum(t["profit_abs"] for t in trades if _ts(t["close_date"]) <= at)


def concurrent(trades: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """For each trade's open time, the trades open at that moment (itself included)."""
    groups = []
    for t in trades:
        at = _ts(t["open_date"])
        groups.append(
            [o for o in trades if _ts(o["open_date"]) <= at < _ts(o["close_date"]) or o is t]
        )
    return groups


# --- 1. the N x fee exit -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fee", "leverage"), [(0.0002, 1), (0.0002, 3), (0.00055, 1), (0.00055, 3)]
)
def test_roi_exits_at_exactly_three_times_the_round_trip_fee(
    emulator: Emulator, tmp_path: Path, fee: float, leverage: int
) -> None:
    run = crafted_backtest(
        emulator,
        tmp_path,
        {"BTC": wave(N_CANDLES, **UP), "ETH": wave(N_CANDLES, **DOWN)},
        money={
            "oracle_take_profit": False,
            "trailing_start_fee_multiple": 50,  # no trailing: let the fee rule do the exit
            "reentry_window_hours": 0,
            "leverage_tiers": [[0.0, leverage]],
            "max_leverage": leverage,
        },
        extra=["--fee", str(fee)],
    )
    trades = run.result()["trades"]
    roi = [t for t in trades if t["exit_reason"] == "roi"]
    assert sum(not t["is_short"] for t in roi) >= 10 and sum(t["is_short"] for t in roi) >= 10
    # Freqtrade infers the tick from the candles in backtests (their decimals), never coarser
    # than the market's: the pinned ticks bound how far above the exact rule an exit can land.
    ticks = {"BTC/USDT:USDT": 0.1, "ETH/USDT:USDT": 0.01}
    for t in roi:
        side = Side.SHORT if t["is_short"] else Side.LONG
        assert t["leverage"] == leverage and t["fee_open"] == t["fee_close"] == fee
        exact = fee_exit_ratio(t["fee_open"], t["fee_close"], t["leverage"], 3.0, side)
        # The rule asks one tick above the exact threshold, so rounding to the nearest tick
        # never lands below it.
        assert t["profit_ratio"] >= exact - 1e-10  # float noise of the exported ratio
        assert t["profit_ratio"] <= exact + ticks[t["pair"]] / t["open_rate"] * leverage + 1e-9
        first_order = 3 * (t["fee_open"] + t["fee_close"]) * t["leverage"]
        assert t["profit_ratio"] == pytest.approx(first_order, abs=2e-5)
        # Net of fees and at least 3x them, in money, on every fill. Crafted candles have
        # float-precision prices (so a negligible tick): the exit sits on the exact threshold and
        # only the export's rounding of profit_abs to 1e-8 USDT is allowed for.
        assert t["profit_abs"] >= 3 * fees_paid(t) - 1e-8


def test_oracle_take_profit_raises_the_exit_never_lowers_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    run = crafted_backtest(
        emulator,
        tmp_path,
        {"BTC": wave(N_CANDLES, **UP)},
        money={"trailing_start_fee_multiple": 50, "reentry_window_hours": 0},
        oracle={"rules": {"min_stop": 0.004, "reward_risk": 2.0}},  # target 0.8% > fee rule
    )
    roi = [t for t in run.result()["trades"] if t["exit_reason"] == "roi"]
    assert roi
    for t in roi:
        floor = fee_exit_ratio(t["fee_open"], t["fee_close"], t["leverage"], 3.0, Side.LONG)
        assert t["profit_ratio"] > floor * 1.5


# --- 2-4, 7, 8: stops, sizing, leverage, re-entry, integrity on one default run ------------------
@pytest.fixture(scope="module")
def default_run(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    btc = wave(N_CANDLES, **UP)
    gap_at = 1900
    gap = btc.iloc[gap_at : gap_at + 20]
    # Drop 20 candles: Freqtrade fills them with zero-volume copies of the last close.
    gapped = pd.concat([btc.iloc[:gap_at], btc.iloc[gap_at + 20 :]])
    run = crafted_backtest(
        emulator,
        tmp_path_factory.mktemp("default"),
        {"BTC": gapped, "ETH": wave(N_CANDLES, **DOWN)},
        extra=["--enable-protections"],
    )
    return run, gap["date"].iloc[0].to_pydatetime(), gap["date"].iloc[-1].to_pydatetime()


def test_leverage_never_exceeds_three(default_run: tuple) -> None:
    trades = default_run[0].result()["trades"]
    assert trades and all(1 <= t["leverage"] <= 3 for t in trades)
    assert {t["leverage"] for t in trades} & {2.0, 3.0}  # confidence does raise it


def test_every_trade_is_stopped_and_its_loss_bounded(default_run: tuple) -> None:
    trades = default_run[0].result()["trades"]
    for t in trades:
        hard = 0.05 / t["leverage"]
        stop = t["stop_loss_abs"]
        # The stop in force is never looser than the hard stoploss.
        if t["is_short"]:
            assert stop <= t["open_rate"] * (1 + hard) + 1e-9
        else:
            assert stop >= t["open_rate"] * (1 - hard) - 1e-9
        assert t["profit_ratio"] >= -0.05 - 2 * t["fee_open"] * t["leverage"] - 1e-6
        if t["exit_reason"] in ("stop_loss", "trailing_stop_loss"):
            assert t["close_rate"] == pytest.approx(stop, rel=1e-9)


def reentries(trades: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(profitable exit, next same-side entry on that pair within 12 h) pairs."""
    out = []
    for pair in {t["pair"] for t in trades}:
        mine = sorted((t for t in trades if t["pair"] == pair), key=lambda t: t["open_date"])
        for prev, nxt in zip(mine, mine[1:], strict=False):
            in_window = _ts(nxt["open_date"]) - _ts(prev["close_date"]) <= timedelta(hours=12)
            if prev["profit_abs"] > 0 and in_window and nxt["is_short"] == prev["is_short"]:
                out.append((prev, nxt))
    return out


def respects_exit_price(prev: dict[str, Any], nxt: dict[str, Any], margin: float) -> bool:
    if nxt["is_short"]:
        return nxt["open_rate"] >= prev["close_rate"] * (1 + margin)
    return nxt["open_rate"] <= prev["close_rate"] * (1 - margin)


def test_reentry_after_a_profitable_exit_needs_a_better_price(
    emulator: Emulator, tmp_path: Path
) -> None:
    swinging = {"BTC": wave(N_CANDLES, base=1e5, drift=0.00005, swing=0.01, swing_period=300)}
    guarded = crafted_backtest(emulator, tmp_path / "on", swinging)
    control = crafted_backtest(
        emulator, tmp_path / "off", swinging, money={"reentry_window_hours": 0}
    )
    # Without the rule this data does re-enter above a profitable exit: the check below can fail.
    unguarded = reentries(control.result()["trades"])
    assert any(not respects_exit_price(p, n, 0.002) for p, n in unguarded)
    guarded_trades = guarded.result()["trades"]
    assert all(respects_exit_price(p, n, 0.002) for p, n in reentries(guarded_trades))
    assert 0 < len(guarded_trades) < len(control.result()["trades"])


def test_no_entry_inside_or_right_after_a_gap(default_run: tuple) -> None:
    run, gap_start, gap_end = default_run
    trades = [t for t in run.result()["trades"] if t["pair"] == "BTC/USDT:USDT"]
    shielded_until = gap_end + STEP * 25  # integrity window (24) + the signal-to-fill candle
    assert not [t for t in trades if gap_start <= _ts(t["open_date"]) <= shielded_until]
    assert any(_ts(t["open_date"]) < gap_start for t in trades)
    assert any(_ts(t["open_date"]) > shielded_until for t in trades)


# --- 3. risk per trade and total open risk --------------------------------------------------------
def test_loss_at_the_stop_is_sized_to_the_risk_budget(emulator: Emulator, tmp_path: Path) -> None:
    risk_per_trade = 0.0005  # small enough that risk sizing, not the wallet split, binds
    run = crafted_backtest(
        emulator,
        tmp_path,
        {c: wave(N_CANDLES, base=b, **CRASHING) for c, b in (("BTC", 1e5), ("ETH", 2500.0))},
        money={
            "risk_per_trade": risk_per_trade,
            "trailing_start_fee_multiple": 50,
            "reentry_window_hours": 0,
        },
    )
    trades = run.result()["trades"]
    stopped = [t for t in trades if t["exit_reason"] == "stop_loss"]
    assert len(stopped) >= 10
    for t in trades:
        budget = risk_per_trade * equity_before(trades, t["open_date"])
        assert -t["profit_abs"] <= budget * 1.02
    # The cap binds: a stop-loss costs about the whole budget, not a fraction of it.
    for t in stopped:
        budget = risk_per_trade * equity_before(trades, t["open_date"])
        assert -t["profit_abs"] >= budget * 0.8


def test_total_open_risk_is_capped(emulator: Emulator, tmp_path: Path) -> None:
    max_open_risk = 0.012
    coins = {"BTC": 1e5, "ETH": 2500.0, "SOL": 150.0, "BNB": 650.0, "DOGE": 0.2, "ADA": 0.7}
    run = crafted_backtest(
        emulator,
        tmp_path,
        {c: wave(N_CANDLES, base=b, drift=0.0002) for c, b in coins.items()},
        money={
            "max_open_risk": max_open_risk,
            "reentry_window_hours": 0,
            "atr_stop_multiplier": 20,
        },
        # Oracle and ATR stops wider than the hard stop: every stop distance is 5%/leverage.
        oracle={"rules": {"min_stop": 0.03, "max_stop": 0.05}},
    )
    trades = run.result()["trades"]
    assert trades
    most = 0
    for group in concurrent(trades):
        equity = equity_before(trades, max(t["open_date"] for t in group))
        at_risk = sum(t["stake_amount"] * (0.05 + 2 * t["fee_open"] * t["leverage"]) for t in group)
        assert at_risk <= max_open_risk * equity * 1.01
        most = max(most, len(group))
    # Six pairs signal together; the cap lets some but not all of them in.
    assert 1 < most < len(coins)


# --- 6. protections ----------------------------------------------------------------------------
def crash_run(emulator: Emulator, workdir: Path, protections: dict[str, Any]) -> FreqtradeRun:
    coins = {"BTC": 1e5, "ETH": 2500.0, "SOL": 150.0}
    return crafted_backtest(
        emulator,
        workdir,
        {c: wave(N_CANDLES, base=b, **CRASHING) for c, b in coins.items()},
        money={
            "trailing_start_fee_multiple": 50,
            "reentry_window_hours": 0,
            "protections": {"pair_cooldown_candles": None, **protections},
        },
        oracle={"rules": {"min_stop": 0.03, "max_stop": 0.05}},
        extra=["--enable-protections"],
    )


def locks_matching(run: FreqtradeRun, test: Callable[[str], bool]) -> list[dict[str, Any]]:
    return [lock for lock in run.result()["locks"] if test(lock["reason"])]


def assert_no_entry_during(run: FreqtradeRun, locks: list[dict[str, Any]]) -> None:
    """No trade opened while a lock covering its pair ("*" covers all) was active."""
    for t in run.result()["trades"]:
        opened = _ts(t["open_date"]).replace(tzinfo=None)
        for lock in locks:
            if lock["pair"] not in ("*", t["pair"]):
                continue
            start = datetime.fromisoformat(lock["lock_time"])
            end = datetime.fromisoformat(lock["lock_end_time"])
            assert not (start < opened < end), (t["open_date"], lock)


def test_three_consecutive_stoplosses_pause_all_entries_for_four_hours(
    emulator: Emulator, tmp_path: Path
) -> None:
    run = crash_run(emulator, tmp_path, {"max_drawdown": None, "daily_loss": None})
    locks = locks_matching(run, lambda r: "consecutive stop-losses" in r)
    assert locks
    for lock in locks:
        assert lock["pair"] == "*"
        span = _ts(lock["lock_end_time"]) - _ts(lock["lock_time"])
        assert span == timedelta(hours=4)
    assert_no_entry_during(run, locks)
    assert "locks: consecutive stop-losses" in run.output


def test_daily_loss_stops_entries_until_the_next_utc_day(
    emulator: Emulator, tmp_path: Path
) -> None:
    run = crash_run(emulator, tmp_path, {"max_drawdown": None, "consecutive_stoplosses": None})
    locks = locks_matching(run, lambda r: r.startswith("daily loss limit"))
    assert locks
    trades = run.result()["trades"]
    for lock in locks:
        end = datetime.fromisoformat(lock["lock_end_time"])
        assert (end.hour, end.minute) == (0, 0)
        day = end - timedelta(days=1)
        lost = -sum(
            t["profit_abs"]
            for t in trades
            if day
            <= _ts(t["close_date"]).replace(tzinfo=None)
            <= datetime.fromisoformat(lock["lock_time"])
        )
        assert lost >= 0.05 * equity_before(trades, f"{day.isoformat()}+00:00") * 0.99
    assert_no_entry_during(run, locks)


def test_drawdown_stops_all_entries(emulator: Emulator, tmp_path: Path) -> None:
    run = crash_run(emulator, tmp_path, {"daily_loss": None, "consecutive_stoplosses": None})
    locks = locks_matching(run, lambda r: " passed 0.15 " in r)
    assert locks, [lock["reason"] for lock in run.result()["locks"]][:5]
    assert all(lock["pair"] == "*" for lock in locks)
    assert_no_entry_during(run, locks)


def test_pair_cooldown_after_exit(default_run: tuple) -> None:
    run = default_run[0]
    cooldowns = locks_matching(run, lambda r: r.startswith("Cooldown period"))
    assert cooldowns and all(lock["pair"] != "*" for lock in cooldowns)
    assert_no_entry_during(run, cooldowns)
