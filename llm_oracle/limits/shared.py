"""One daily budget for every process on a journal: the oracle's reservations.

After the local gate (`guard`) admits a request, it is reserved in the journal
(`Journal.reserve`, BEGIN IMMEDIATE), with the tokens and USD it is expected to cost and how long
this process will ask it; its row takes the reservation over. Each call runs on one budget thread,
never on the event loop. A question another process is asking is not reserved: its answer is
waited for (`answer_of_other`). A journal that cannot take a reservation (locked, failing) leaves
this process's ledger in charge for a few seconds: live, a reservation never waits more than half
a second (nor half of what is left before the deadline). A reservation that comes back after its
caller gave up (deadline, cancellation) is released, even while the oracle closes.
Not exported by `llm_oracle.limits` (it needs the journal; the backends import `limits`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from datetime import time as day_start
from typing import TYPE_CHECKING, Any

from llm_oracle.journal import Caps, Journal, JournalError, Reserved
from llm_oracle.limits.budget import Spend
from llm_oracle.limits.guard import Refusal, SpendGuard
from llm_oracle.models import ErrorKind, OracleDecision, OracleRequest, Usage

if TYPE_CHECKING:
    from llm_oracle.backends import Backend

logger = logging.getLogger(__name__)

# How often a question another process is asking is looked up in the journal.
OTHER_POLL_S = 0.1
# Live, a reservation waits at most this long for the journal's lock (and at most half of what
# is left before the deadline): a locked journal leaves the budget to this process's ledger.
RESERVE_BUSY_S = 0.5
# After the journal could not take a reservation, this process's ledger alone decides this long.
PAUSE_S = 5.0
# Measured tokens and USD of an answer (for reservations' estimates) are re-read this often.
MEASURE_EVERY_S = 60.0


class SharedBudget:
    def __init__(
        self,
        journal: Journal,
        backend: Backend,
        guard: SpendGuard,
        *,
        timeout_s: float,
        margin_s: float,
        write_floor_s: float,
        trouble: Callable[[JournalError], None],
        works: Callable[[], None],
    ) -> None:
        """`margin_s`: beyond its deadline, how long a call may still be settling;
        `write_floor_s`: the least time a reservation gets, even at the deadline;
        `trouble` / `works`: the journal failed to take a reservation / takes them again."""
        self.journal = journal
        self.backend = backend
        self.guard = guard
        self.timeout_s = timeout_s
        self.margin_s = margin_s
        self.write_floor_s = write_floor_s
        self._trouble = trouble
        self._works = works
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-oracle-budget")
        self._off_until = 0.0  # time.monotonic(): until then the journal is not asked
        self._measured: tuple[float, Usage | None] | None = None  # (when, mean usage)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn` on the budget thread; here if that is shut down (closing)."""
        try:
            self._pool.submit(fn, *args)
        except RuntimeError:
            fn(*args)

    def release(self, reservation: int, sent: int) -> None:
        """Keep `sent` requests of a reservation (0 deletes it), on the budget thread."""
        self.submit(self._release, reservation, sent)

    def close(self) -> None:
        """Wait for the reservations and releases still queued (late releases included)."""
        self._pool.shutdown(wait=True)

    def expires_s(self, deadline: float | None) -> float:
        """How long a request reserved now may still be asked by this process (its reservation
        says so to the others): live, the deadline; recording, one decision's time plus a wait
        for its rate-limit slot."""
        if deadline is not None:
            left = deadline - asyncio.get_running_loop().time()
            return max(0.0, left) + self.margin_s
        limits = self.backend.limits
        wait = 60.0 * limits.concurrency / limits.rpm if limits else 0.0
        return self.timeout_s + self.margin_s + wait

    def _estimate(self, request: OracleRequest | None) -> tuple[int, float]:
        """On the budget thread: tokens and USD a request is reserved with, until its row says
        what it cost (the journal's recent answers of this model, else a conservative guess)."""
        source = getattr(self.backend, "source", self.backend)
        estimate = getattr(source, "estimate_spend", None)
        if estimate is None:
            return 0, 0.0
        now = time.monotonic()
        if self._measured is None or now - self._measured[0] > MEASURE_EVERY_S:
            ident = self.backend.identity
            try:
                usage = self.journal.mean_usage(ident.name, ident.model)
            except JournalError:
                usage = None
            self._measured = (now, usage)
        spend: tuple[int, float] = estimate(request, self._measured[1])
        return spend

    def _reserve_now(
        self,
        key: str | None,
        request: OracleRequest | None,
        expires_s: float,
        busy_s: float | None,
        extend: int | None = None,
        dedupe: bool = True,
    ) -> Reserved | JournalError | None:
        """On the budget thread: one more request against the day's caps, all processes.
        None: the journal is paused after a failure (this process's ledger decides)."""
        if time.monotonic() < self._off_until:
            return None
        limits = self.backend.limits
        assert limits is not None
        budget = limits.budget
        today = datetime.combine(datetime.now(UTC).date(), day_start(0), tzinfo=UTC)
        caps = Caps(budget.daily_calls, budget.daily_tokens, budget.daily_usd)
        try:
            return self.journal.reserve(
                self.backend.identity.name,
                today,
                caps,
                key=key,
                extend=extend,
                expires_s=expires_s,
                estimate=self._estimate(request),
                dedupe=dedupe,
                busy_s=busy_s,
            )
        except JournalError as exc:
            self._off_until = time.monotonic() + PAUSE_S
            return exc

    async def reserve(
        self, key: str, request: OracleRequest, deadline: float | None, dedupe: bool = True
    ) -> tuple[Refusal | None, int | None, int | None]:
        """Reserve an admitted request in the journal: (refusal when the shared caps are spent,
        reservation id, reservation of another process asking the same question (-1: it is
        answered already)). A journal that cannot take it (locked, failing) leaves the local
        ledger in charge: the request goes out, the failure is announced once."""
        loop = asyncio.get_running_loop()
        busy_s = None
        if deadline is not None:
            busy_s = min(RESERVE_BUSY_S, max(0.0, deadline - loop.time()) / 2)
        future = self._pool.submit(
            self._reserve_now, key, request, self.expires_s(deadline), busy_s, None, dedupe
        )
        try:
            if deadline is None:
                reserved = await asyncio.wrap_future(future)
            else:
                wait = max(self.write_floor_s, deadline - loop.time())
                reserved = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), wait)
        except BaseException as exc:  # too late, or cancelled: a late reservation is released
            future.add_done_callback(self._release_late)
            self.guard.budget.settle(Spend())
            self.guard.breaker.cancel_trial()
            if not isinstance(exc, TimeoutError):
                raise
            detail = "the journal took too long to reserve the request (locked?)"
            return Refusal(ErrorKind.TIMEOUT, detail), None, None
        if reserved is None:
            return None, None, None
        if isinstance(reserved, JournalError):
            self._trouble(reserved)
            return None, None, None
        self._works()
        if reserved.answered or reserved.asked_by is not None:
            self.guard.budget.settle(Spend())  # nothing will be sent: give the admission back
            self.guard.breaker.cancel_trial()
            return None, None, -1 if reserved.answered else reserved.asked_by
        if reserved.id is None:
            return self.guard.refuse_budget(reserved.exhausted or "caps reached"), None, None
        return None, reserved.id, None

    async def extend(self, reservation: int, recording: bool) -> str | None:
        """A retry of that reservation's request: None lets it go; a text says why not."""
        busy_s = None if recording else RESERVE_BUSY_S
        future = self._pool.submit(
            self._reserve_now, None, None, self.expires_s(None), busy_s, reservation
        )
        reserved = await asyncio.wrap_future(future)
        if not isinstance(reserved, Reserved):
            return None
        return None if reserved.id is not None else f"daily budget exhausted: {reserved.exhausted}"

    async def answer_of_other(
        self, key: str, other: int, deadline: float | None
    ) -> OracleDecision | None:
        """Wait for another process's answer to this question: the answer once it is in the
        journal; None when that process gave up (ask it here then) or the deadline came."""
        loop = asyncio.get_running_loop()

        def look() -> tuple[OracleDecision | None, bool]:
            found = self.journal.lookup([key]).get(key)
            waiting = other >= 0 and self.journal.reservation_open(other)
            return found, found is None and waiting

        while True:
            look_up = asyncio.wrap_future(self._pool.submit(look))
            try:
                if deadline is None:
                    found, waiting = await look_up
                else:
                    left = deadline - loop.time()
                    found, waiting = await asyncio.wait_for(look_up, max(0.0, left))
            except (JournalError, TimeoutError):
                return None
            if found is not None or not waiting:
                return found
            if deadline is not None and loop.time() + OTHER_POLL_S >= deadline:
                return None
            await asyncio.sleep(OTHER_POLL_S)  # a wait on another process, not a sync point

    def _release_late(self, future: Future[Reserved | JournalError | None]) -> None:
        """A reservation that came back after its caller gave up: nothing was sent for it.
        A done callback of the budget thread's future (runs without the event loop)."""
        reserved = None if future.cancelled() or future.exception() else future.result()
        if isinstance(reserved, Reserved) and reserved.id is not None:
            self.release(reserved.id, 0)

    def _release(self, reservation: int, sent: int) -> None:
        try:
            self.journal.release(reservation, sent)
        except JournalError as exc:
            logger.debug("releasing reservation %d failed: %s", reservation, exc)
