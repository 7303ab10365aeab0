"""Requests-per-minute limiter: an async token bucket with an injectable clock.

A bucket of `burst` tokens refills at rpm/60 tokens per second; each request takes one. Waiters
queue in arrival order (an asyncio.Lock), and a waiter whose deadline would pass before its token
arrives gives up at once instead of sleeping in vain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class RateLimiter:
    def __init__(
        self,
        rpm: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rpm <= 0 or burst < 1:
            raise ValueError("rpm must be > 0 and burst >= 1")
        self.rate = rpm / 60.0  # tokens per second
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp: float | None = None
        self._lock = asyncio.Lock()

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def _refill(self, now: float) -> None:
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, deadline: float | None = None) -> bool:
        """Take a token; False when none can be had before `deadline` (nothing is taken then)."""
        if not await acquire_before(self._lock, deadline, self._now):
            return False
        try:
            while True:
                now = self._now()
                self._refill(now)
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return True
                wait = (1.0 - self._tokens) / self.rate
                if deadline is not None and now + wait > deadline:
                    return False
                await self._sleep(wait)
        finally:
            self._lock.release()


async def acquire_before(
    lock: asyncio.Lock | asyncio.Semaphore,
    deadline: float | None,
    now: Callable[[], float] | None = None,
) -> bool:
    """Acquire a lock or semaphore, giving up at `deadline` (None: wait as long as it takes)."""
    if deadline is None:
        await lock.acquire()
        return True
    current = now() if now else asyncio.get_running_loop().time()
    remaining = deadline - current
    if remaining <= 0:
        if lock.locked():
            return False
        await lock.acquire()  # free: returns at once
        return True
    try:
        await asyncio.wait_for(lock.acquire(), remaining)
    except TimeoutError:
        return False
    return True
