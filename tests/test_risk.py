"""The money rules' arithmetic, with property-based tests over fees, leverage and prices."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_oracle.config import OracleConfigError
from llm_oracle.models import Side
from llm_oracle.risk import (
    MoneyRules,
    clean_windows,
    fee_exit_ratio,
    initial_stop_distance,
    leverage_for,
    load_money_rules,
    loss_at_stop,
    open_trade_risk,
    reentry_allowed,
    respect_liquidation,
    risk_sized_stake,
    roi_ratio,
    stop_price,
    tighter,
)

fees = st.floats(min_value=0.0, max_value=0.002)
leverages = st.floats(min_value=1.0, max_value=3.0)
prices = st.floats(min_value=1e-4, max_value=2e5)
sides = st.sampled_from([Side.LONG, Side.SHORT])
multiples = st.floats(min_value=1.0, max_value=10.0)


def freqtrade_profit(side: Side, p0: float, p1: float, fo: float, fc: float, lev: float) -> tuple:
    """Freqtrade's own formulas (trade_model.calc_profit_ratio), per unit of amount."""
    if side is Side.LONG:
        open_value, close_value = p0 * (1 + fo), p1 * (1 - fc)
        return close_value - open_value, (close_value / open_value - 1) * lev
    open_value, close_value = p0 * (1 - fo), p1 * (1 + fc)
    return open_value - close_value, (1 - close_value / open_value) * lev


@given(fo=fees, fc=fees, lev=leverages, n=multiples, side=sides, p0=prices)
def test_fee_threshold_is_exactly_n_times_the_fees_paid(fo, fc, lev, n, side, p0) -> None:
    ratio = fee_exit_ratio(fo, fc, lev, n, side)
    # Invert Freqtrade's ratio to the exit price, then check profit == n x fees in money.
    if side is Side.LONG:
        p1 = (ratio / lev + 1) * p0 * (1 + fo) / (1 - fc)
    else:
        p1 = (1 - ratio / lev) * p0 * (1 - fo) / (1 + fc)
    profit, ft_ratio = freqtrade_profit(side, p0, p1, fo, fc, lev)
    fees_paid = p0 * fo + p1 * fc
    assert profit == pytest.approx(n * fees_paid, rel=1e-9, abs=1e-12 * p0)
    assert ft_ratio == pytest.approx(ratio, rel=1e-9, abs=1e-15)
    # And it is the first-order rule to within fee squared.
    second_order = 4 * (n + 1) ** 2 * (fo + fc) ** 2 * lev
    assert ratio == pytest.approx(n * (fo + fc) * lev, abs=second_order + 1e-15)


@given(fo=fees, fc=fees, lev=leverages, side=sides, tp=st.floats(0.0005, 0.05))
def test_take_profit_only_raises_the_exit(fo, fc, lev, side, tp) -> None:
    rules = MoneyRules()
    floor = fee_exit_ratio(fo, fc, lev, rules.fee_multiple, side)
    assert roi_ratio(rules, fo, fc, lev, tp, side) >= floor
    assert roi_ratio(rules, fo, fc, lev, None, side) == floor
    no_tp = MoneyRules(oracle_take_profit=False)
    assert roi_ratio(no_tp, fo, fc, lev, tp, side) == floor


@given(
    oracle=st.one_of(st.none(), st.floats(0.0005, 0.2)),
    atr=st.one_of(st.none(), st.floats(0.0005, 0.2)),
    lev=leverages,
)
def test_initial_stop_is_the_tightest_and_never_looser_than_hard(oracle, atr, lev) -> None:
    distance = initial_stop_distance(oracle, atr, -0.05, lev)
    assert distance <= 0.05 / lev + 1e-15
    for d in (oracle, atr):
        if d is not None:
            assert distance <= d


@given(p=prices, d1=st.floats(0.001, 0.1), d2=st.floats(0.001, 0.1), side=sides)
def test_tighter_stop_is_closer_to_the_price(p, d1, d2, side) -> None:
    a, b = stop_price(p, d1, side), stop_price(p, d2, side)
    chosen = tighter(a, b, side)
    assert abs(chosen - p) == pytest.approx(min(abs(a - p), abs(b - p)))


@given(side=sides, p=prices, liq_distance=st.floats(0.001, 0.5), d=st.floats(0.001, 0.5))
def test_stop_always_triggers_before_liquidation(side, p, liq_distance, d) -> None:
    stop = stop_price(p, d, side)
    liquidation = stop_price(p, liq_distance, side)
    safe = respect_liquidation(stop, liquidation, 0.005, side)
    if side is Side.LONG:
        assert safe > liquidation and safe >= stop
    else:
        assert safe < liquidation and safe <= stop


@given(
    equity=st.floats(100, 1e7),
    lev=leverages,
    distance=st.floats(0.0005, 0.1),
    fee=st.floats(0, 0.004),
    risk=st.floats(0.001, 0.1),
)
def test_risk_sized_stake_loses_exactly_the_budget_at_the_stop(equity, lev, distance, fee, risk):
    stake = risk_sized_stake(equity, risk, lev, distance, fee)
    assert loss_at_stop(stake, lev, distance, fee) == pytest.approx(risk * equity, rel=1e-9)
    assert loss_at_stop(stake * 0.999, lev, distance, fee) < risk * equity


@given(p=prices, d=st.floats(0.001, 0.1), side=sides, amount=st.floats(0.001, 100))
def test_open_risk_counts_distance_to_stop_and_fees(p, d, side, amount) -> None:
    stop = stop_price(p, d, side)
    assert open_trade_risk(amount, p, stop, side, 0.0) == pytest.approx(amount * p * d)
    # A stop already beyond entry (profit locked) leaves only the fees at risk.
    locked = stop_price(p, -d, side)
    assert open_trade_risk(amount, p, locked, side, 0.001) == pytest.approx(0.001 * amount * p)


def test_leverage_follows_confidence_and_caps() -> None:
    rules = MoneyRules()
    assert leverage_for(0.5, rules, 100) == 1.0
    assert leverage_for(0.75, rules, 100) == 2.0
    assert leverage_for(0.9, rules, 100) == 3.0
    assert leverage_for(0.9, rules, 2.5) == 2.5  # exchange limit
    assert leverage_for(0.99, MoneyRules(max_leverage=1), 100) == 1.0


@given(conf=st.floats(0, 1), cap=st.floats(1, 3), exchange=st.floats(1, 100))
def test_leverage_never_exceeds_three(conf, cap, exchange) -> None:
    lev = leverage_for(conf, MoneyRules(max_leverage=cap), exchange)
    assert 1.0 <= lev <= min(3.0, cap, max(exchange, 1.0))


def test_reentry_after_profit_needs_a_better_price() -> None:
    rules = MoneyRules(reentry_margin=0.01, reentry_window_hours=12)
    t0 = datetime(2025, 6, 1, tzinfo=UTC)
    soon = t0 + timedelta(hours=1)
    assert not reentry_allowed(Side.LONG, 100.0, 100.0, True, t0, soon, rules)
    assert not reentry_allowed(Side.LONG, 99.5, 100.0, True, t0, soon, rules)
    assert reentry_allowed(Side.LONG, 98.9, 100.0, True, t0, soon, rules)
    assert not reentry_allowed(Side.SHORT, 100.5, 100.0, True, t0, soon, rules)
    assert reentry_allowed(Side.SHORT, 101.1, 100.0, True, t0, soon, rules)
    assert reentry_allowed(Side.LONG, 105.0, 100.0, False, t0, soon, rules)  # after a loss
    assert reentry_allowed(Side.LONG, 105.0, 100.0, True, t0, t0 + timedelta(hours=13), rules)


def test_clean_windows_flags_gaps_and_zero_volume() -> None:
    dates = 1_748_736_000 + 180 * np.arange(30)
    volume = np.ones(30)
    clean = clean_windows(dates, volume, 180, 5)
    assert not clean[:4].any() and clean[4:].all()
    volume[10] = 0
    clean = clean_windows(dates, volume, 180, 5)
    assert not clean[10:15].any() and clean[15] and clean[9]
    gapped = np.delete(dates, 20)
    clean = clean_windows(gapped, np.ones(29), 180, 5)
    assert not clean[20:25].any() and clean[25] and clean[19]


def test_money_rules_config_errors_name_the_key() -> None:
    with pytest.raises(OracleConfigError, match=r"money_rules\.risk_per_trad: unknown key"):
        load_money_rules({"risk_per_trad": 0.01})
    with pytest.raises(OracleConfigError, match=r"money_rules\.max_leverage"):
        load_money_rules({"max_leverage": 5})
    with pytest.raises(OracleConfigError, match="highest confidence first"):
        load_money_rules({"leverage_tiers": [[0.5, 2], [0.9, 3]]})
    assert load_money_rules(None) == MoneyRules()
    assert load_money_rules({"protections": {"daily_loss": None}}).protections.daily_loss is None


def test_shipped_config_states_the_defaults() -> None:
    import json
    from pathlib import Path

    shipped = json.loads((Path(__file__).resolve().parents[1] / "config.json").read_text())
    assert load_money_rules(shipped["money_rules"]) == MoneyRules()
