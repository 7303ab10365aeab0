"""Circuit breaker: after K consecutive failed calls, refuse calls for a cooldown, then try one.

States: closed (calls go out), open (refused until the cooldown ends), half-open (one trial call
is out; its result closes or re-opens the circuit). `seed` restores the state a previous process
left, read from the journal, so a restart does not hammer a provider that was failing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self, failures: int, cooldown_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.consecutive_failures = 0
        self._open_until: float | None = None
        self._trial_out = False

    @property
    def state(self) -> BreakerState:
        if self._open_until is None:
            return BreakerState.CLOSED
        if self._trial_out or self._clock() >= self._open_until:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def seconds_left(self) -> float:
        if self._open_until is None:
            return 0.0
        return max(0.0, self._open_until - self._clock())

    def seed(self, consecutive_failures: int, seconds_since_last: float) -> None:
        """Restore from history: failures in a row, and how long ago the last one happened."""
        self.consecutive_failures = consecutive_failures
        if consecutive_failures >= self.threshold:
            left = max(0.0, self.cooldown_s - max(0.0, seconds_since_last))
            self._open_until = self._clock() + left

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one trial at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_out:
            self._trial_out = True
            return True
        return False

    def cancel_trial(self) -> None:
        """An allowed call never went out: let the next one be the trial."""
        self._trial_out = False

    def record(self, success: bool) -> BreakerState | None:
        """Count a call's result; returns the new state when it changed to open or closed."""
        was_open = self._open_until is not None
        self._trial_out = False
        if success:
            self.consecutive_failures = 0
            self._open_until = None
            return BreakerState.CLOSED if was_open else None
        self.consecutive_failures += 1
        if was_open or self.consecutive_failures >= self.threshold:
            self._open_until = self._clock() + self.cooldown_s
            return None if was_open else BreakerState.OPEN
        return None
