"""Decision memory and the exit-review schedule, without Freqtrade."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from llm_oracle.trade_memory import DecisionMemory, ReviewSchedule

CANDLE = timedelta(minutes=3)
T0 = datetime(2025, 6, 3, 12, 0, tzinfo=UTC)


def test_an_entry_finds_the_decision_of_the_candle_before_it() -> None:
    memory = DecisionMemory(CANDLE)
    memory.remember("BTC", T0, {"confidence": 0.8})
    assert memory.at_entry("BTC", T0 + CANDLE) == {"confidence": 0.8}
    assert memory.at_entry("BTC", T0) is None
    assert memory.at_entry("ETH", T0 + CANDLE) is None


def test_live_memory_is_bounded_per_pair_and_keeps_the_newest() -> None:
    memory = DecisionMemory(CANDLE, per_pair=3)
    for i in range(10):
        memory.remember("BTC", T0 + i * CANDLE, {"i": i})
    assert memory.at_entry("BTC", T0 + 10 * CANDLE) == {"i": 9}
    assert memory.at_entry("BTC", T0 + 8 * CANDLE) == {"i": 7}  # the third newest: kept
    assert memory.at_entry("BTC", T0 + 7 * CANDLE) is None  # the fourth: evicted


def test_reviews_start_at_min_candles_then_every_n_once_per_candle() -> None:
    schedule = ReviewSchedule(min_candles=10, every_candles=5, candle=CANDLE)
    due = [k for k in range(40) if schedule.due(1, T0, T0 + k * CANDLE) is not None]
    assert due == [9, 14, 19, 24, 29, 34, 39]  # held = k + 1 candles: 10, 15, 20, ...
    schedule.record(1, T0 + 9 * CANDLE, None)
    assert schedule.due(1, T0, T0 + 9 * CANDLE) is None  # same candle: not again


def test_verdicts_wait_for_custom_exit_and_go_with_their_trade() -> None:
    schedule = ReviewSchedule(min_candles=1, every_candles=1, candle=CANDLE)
    schedule.record(1, T0, "oracle_exit")
    schedule.record(2, T0, None)
    assert schedule.any_exit() and schedule.verdict(1) == "oracle_exit"
    assert schedule.verdict(2) is None and schedule.verdict(3) is None
    schedule.keep_only({2})
    assert not schedule.any_exit() and schedule.verdict(1) is None
