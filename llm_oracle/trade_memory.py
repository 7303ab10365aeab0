"""What the strategy decided at each signal candle, and when each open trade is due a review.

Freqtrade calls `leverage`, `custom_stake_amount`, `confirm_trade_entry` and `order_filled` one
after another for an entry, each with only the pair and a time; `DecisionMemory` lets each of them
find the decision behind the entry in O(1). `ReviewSchedule` decides which open trades the oracle
reviews on a candle (once per trade and candle, from the Nth candle held, every Mth) and keeps
the verdicts `custom_exit` reports. Both are plain objects with no Freqtrade import.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


class DecisionMemory:
    """Confirmed entry decisions by pair and signal candle.

    `per_pair` bounds the memory in dry/live runs, where fills happen within a candle or two of
    the signal; backtests keep everything (None), since an entry can refer to any candle.
    """

    def __init__(self, candle: timedelta, per_pair: int | None = None) -> None:
        self.candle = candle
        self.per_pair = per_pair
        self._by_pair: dict[str, dict[datetime, dict[str, Any]]] = {}

    def remember(self, pair: str, signal_time: datetime, decision: dict[str, Any]) -> None:
        memory = self._by_pair.setdefault(pair, {})
        memory[signal_time] = decision
        if self.per_pair is not None and len(memory) > self.per_pair:
            for stale in sorted(memory)[: len(memory) - self.per_pair]:
                del memory[stale]

    def at_entry(self, pair: str, entry_candle_open: datetime) -> dict[str, Any] | None:
        """The decision behind an entry on the candle opening at `entry_candle_open`.

        Signals are shifted by one candle: the entry fills on the candle after the signal.
        """
        return self._by_pair.get(pair, {}).get(entry_candle_open - self.candle)

    def clear(self) -> None:
        self._by_pair.clear()


class ReviewSchedule:
    """Which open trades an exit review is due for, and the verdicts custom_exit reports."""

    def __init__(self, min_candles: int, every_candles: int, candle: timedelta) -> None:
        self.min_candles = min_candles
        self.every_candles = every_candles
        self.candle = candle
        self._reviewed: dict[int, tuple[datetime, str | None]] = {}

    def candles_held(self, opened: datetime, newest_closed: datetime) -> int:
        """Analysed candles of a trade opened at `opened`, the newest closing candle included."""
        return int((newest_closed - opened) / self.candle) + 1

    def due(self, trade_id: int, opened: datetime, newest_closed: datetime) -> int | None:
        """Candles held if the trade is due a review on `newest_closed`, else None."""
        last = self._reviewed.get(trade_id)
        if last is not None and last[0] == newest_closed:
            return None
        held = self.candles_held(opened, newest_closed)
        if held < self.min_candles or (held - self.min_candles) % self.every_candles:
            return None
        return held

    def record(self, trade_id: int, candle: datetime, verdict: str | None) -> None:
        self._reviewed[trade_id] = (candle, verdict)

    def verdict(self, trade_id: int) -> str | None:
        reviewed = self._reviewed.get(trade_id)
        return reviewed[1] if reviewed else None

    def keep_only(self, open_ids: set[int]) -> None:
        for gone in set(self._reviewed) - open_ids:
            del self._reviewed[gone]

    def any_exit(self) -> bool:
        return any(verdict for _, verdict in self._reviewed.values())

    def clear(self) -> None:
        self._reviewed.clear()
