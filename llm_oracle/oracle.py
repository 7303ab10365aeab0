"""The oracle: journal-as-cache in front of a backend, with a deadline and an explicit fallback.

`Oracle.decide_many` is the only entry point the strategy needs. For a batch of requests it
1. computes every decision key and fetches all known answers in one journal query (replay);
   a question that already got `max_invalid_answers` unusable answers is "unanswerable": it is
   not asked again (until the prompt, schema, model or a keyed setting changes) and is counted
   apart from misses,
2. asks the backend for the misses concurrently: each takes a concurrency slot, passes the
   spending gate (daily budget, circuit breaker) and is bounded by the deadline, which the
   backend owns (attempts, error kind and cost come back exact),
3. records each answer (or failed attempt, with its error kind) the moment it arrives, in its own
   transaction, on a writer thread (never on the event loop that serves calls): a kill mid-batch
   loses nothing answered, and a restart never repeats a call,
4. answers failures with the configured fallback, and announces switches to and from the fallback
   once (log line + `drain_events()` / `on_event`, for the strategy's dp.send_msg; `on_event`
   may be called from the journal writer thread).
A journal that fails (disk full, locked, read-only, corrupt) loses nothing it can keep: the
answer serves the running candle (and this process) from memory, the budget reservation and the
breaker are settled as for any answer, and the failure is announced once, with advice.
Live, the whole batch answers within `timeout_s` (a request still waiting for a slot then gets the
fallback); with `recording` every request waits for its slot, and `timeout_s` bounds each call.
Backends run on one private event loop thread, so async clients keep their connections between
batches and the caller (Freqtrade's synchronous loop) never waits past the deadline.
One daily budget for every process on the journal: after the local gate, each request (retries
too) is reserved in the journal (`llm_oracle.limits.shared`), and its row takes the reservation
over.
Started by `llm-oracle record` (`llm_oracle.record.link`), the oracle reports progress to it and
watches it: once `record` is gone no request is sent, what is in flight settles, the process ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from llm_oracle.backends import Backend, BackendResult, RulesBackend, build_backend, failure
from llm_oracle.backends.gemini import GeminiBackend, api_key_from_env
from llm_oracle.config import FallbackPolicy, LimitsConfig, OracleConfig
from llm_oracle.journal import Journal, JournalError, JournalProblem, Lookup
from llm_oracle.limits import (
    CircuitBreaker,
    DailyBudget,
    Spend,
    SpendGuard,
    acquire_before,
)
from llm_oracle.limits.shared import SharedBudget
from llm_oracle.models import (
    DecisionSource,
    ErrorKind,
    JournalEntry,
    OracleDecision,
    OracleRequest,
    Purpose,
)
from llm_oracle.progress import Progress, ProgressCallback, TqdmProgress, progress_wanted
from llm_oracle.prompt import render
from llm_oracle.record.link import (
    STOP_FLUSH_S,
    STOP_IN_FLIGHT_MARGIN_S,
    AskEvent,
    DoneEvent,
    QuestionEvent,
    RecorderLink,
    recorder_link,
)
from llm_oracle.secrets import Scrubber

logger = logging.getLogger(__name__)
T = TypeVar("T")
_WEDGE_MARGIN_S = 1.0  # beyond the deadline, only a loop stuck in blocking code is waited for
# The backend owns the deadline; the oracle steps in only for one that ignores it, this late.
_BACKEND_GRACE_S = 0.25
_UNRECORDED_MAX = 10_000  # answers kept in memory while the journal cannot take them
# Live, a journal write gets at least this long even at the deadline (a commit takes ~1 ms);
# a slower disk finishes it in the background while memory serves the answer.
_WRITE_FLOOR_S = 0.1
# Exit code of a recording child whose `record` is gone (as if SIGTERM had ended it).
EXIT_RECORDER_GONE = 143
# The journal reservation of the request this task is making (read by the retry gate).
_RESERVATION: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "llm_oracle_reservation", default=None
)


@dataclass(frozen=True, slots=True)
class Outcome:
    key: str
    decision: OracleDecision
    source: DecisionSource
    error_kind: ErrorKind | None = None


@dataclass(slots=True)
class OracleStats:
    requests: int = 0
    exit_reviews: int = 0  # of `requests`, the ones reviewing an open trade
    journal_hits: int = 0
    misses: int = 0
    review_misses: int = 0  # of `misses`, exit reviews (reported apart: they replay differently)
    unanswerable: int = 0  # not misses: asked max_invalid_answers times, never usably answered
    backend_calls: int = 0
    recorded: int = 0
    fallbacks: int = 0
    seconds: float = 0.0  # wall time spent inside decide_many (lookups, calls, recording)
    errors: dict[str, int] = field(default_factory=dict)
    requests_sent: int = 0  # HTTP requests to a provider, retries included
    tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, billed at the cached price
    cost_usd: float = 0.0
    model_mismatches: int = 0  # answers from another model than the configured one
    memory_hits: int = 0  # answers served from memory because the journal could not take them
    journal_write_failures: int = 0
    journal_read_failures: int = 0
    answered_elsewhere: int = 0  # misses another process was asking: its answer, no second call

    def summary(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        line = (
            f"oracle: {self.requests - self.exit_reviews} candidates + {self.exit_reviews} exit "
            f"reviews, {self.journal_hits} journal hits, {self.misses} misses, "
            f"{self.unanswerable} unanswerable, {self.backend_calls} backend calls, "
            f"{self.recorded} recorded, {self.fallbacks} fallbacks, errors: {errors}, "
            f"{self.requests_sent} requests sent, {self.tokens} tokens "
            f"({self.cached_tokens} cached), ${self.cost_usd:.4f}, {self.seconds:.2f} s in oracle, "
            f"misses by purpose: entries {self.misses - self.review_misses}, "
            f"exit reviews {self.review_misses}"
        )
        if self.answered_elsewhere:
            line += f"; {self.answered_elsewhere} answered by another process on the journal"
        if self.journal_write_failures or self.journal_read_failures or self.memory_hits:
            line += (
                f"; journal failures: {self.journal_write_failures} writes, "
                f"{self.journal_read_failures} reads, {self.memory_hits} answers from memory"
            )
        return line


class _LoopThread:
    """A private asyncio loop on a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="llm-oracle-loop", daemon=True
                )
                self._thread.start()
            loop = self._loop
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            raise

    @property
    def started(self) -> bool:
        return self._loop is not None

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5.0)
        if not loop.is_running():
            loop.close()


class Oracle:
    def __init__(
        self,
        config: OracleConfig,
        journal: Journal,
        backend: Backend | None = None,
        *,
        on_event: Callable[[str], None] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.backend = backend or build_backend(config)
        self.rules = RulesBackend(config.rules)
        self.stats = OracleStats()
        self.on_event = on_event
        self._events: deque[str] = deque(maxlen=1000)
        self._on_progress = on_progress or (
            TqdmProgress() if progress_wanted(config.progress) else None
        )
        self._loop = _LoopThread()
        # Journal writes run here, one at a time: a slow or locked disk never stalls the loop.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-oracle-journal")
        self._unrecorded: OrderedDict[str, OracleDecision] = OrderedDict()
        # Rows waiting for the journal, oldest first: queued here by the loop, drained by the
        # writer thread. A row the journal refuses stays and goes in with the next drain.
        self._backlog: deque[tuple[JournalEntry, frozenset[str], int | None]] = deque()
        self._unrecorded_lock = threading.Lock()
        self._journal_failing: dict[str, JournalProblem] = {}  # "write"/"read" -> problem
        self._failing: ErrorKind | None = None
        self._served_models: set[str] = set()
        self._scrubber = Scrubber(api_key_from_env)
        self._closed = False
        limits = self.backend.limits
        # Bound here, not in the backend, so the gate below is passed by at most this many.
        self._slots = asyncio.Semaphore(limits.concurrency) if limits else None
        self.guard = self._guard(limits) if limits else None
        # Reservations in the shared journal: their own thread, never the event loop.
        self.shared = (
            SharedBudget(
                journal,
                self.backend,
                self.guard,
                timeout_s=config.timeout_s,
                margin_s=_BACKEND_GRACE_S + _WEDGE_MARGIN_S,
                write_floor_s=_WRITE_FLOOR_S,
                trouble=lambda exc: self._journal_trouble("reserve", exc),
                works=lambda: self._journal_works("reserve"),
            )
            if self.guard is not None
            else None
        )
        self._stopping = False
        self._in_flight = 0
        source = getattr(self.backend, "source", self.backend)
        if limits and isinstance(source, GeminiBackend):
            source.retry_gate = self._retry_gate
        self._link: RecorderLink | None = recorder_link() if config.recording else None
        if self._link is not None:
            self._on_progress = None  # `record` draws one bar for the whole run
            self.journal.run = self._link.run  # `record` counts the rows of its own run
            self._link.watch(self._recorder_gone)

    def _guard(self, limits: LimitsConfig) -> SpendGuard:
        name = self.backend.identity.name

        def spent_since(since: datetime) -> Spend:
            try:
                return Spend(*self.journal.spend_since(name, since))
            except JournalError as exc:
                # The day's spend cannot be read back: count from what this process spends.
                self.stats.journal_read_failures += 1
                self._journal_trouble("read", exc)
                return Spend()

        guard = SpendGuard(
            name,
            DailyBudget(limits.budget, spent_since),
            CircuitBreaker(limits.breaker.failures, limits.breaker.cooldown_s),
            fallback=self.config.fallback.value,
            announce=self._announce,
        )
        guard.seed_breaker(self.journal.recent_calls(name, limits.breaker.failures))
        return guard

    # --- events ------------------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        backend_scrubber = getattr(self.backend, "scrubber", None)
        if isinstance(backend_scrubber, Scrubber):
            text = backend_scrubber.scrub(text)
        return self._scrubber.scrub(text)

    def _announce(self, level: int, message: str) -> None:
        message = self.scrub(message)
        logger.log(level, message)
        self._events.append(message)
        if self.on_event is not None:
            try:
                self.on_event(message)
            except Exception:  # a notifier's failure must not stop trading decisions
                logger.exception("oracle on_event callback failed")

    def drain_events(self) -> list[str]:
        """Messages about switches to or from the fallback since the last call, oldest first."""
        drained: list[str] = []
        while self._events:
            drained.append(self._events.popleft())
        return drained

    # --- deciding ----------------------------------------------------------------------------
    def key_for(self, request: OracleRequest) -> str:
        return self.backend.identity.key(request)

    def decide_many(self, requests: Sequence[OracleRequest]) -> list[Outcome]:
        if not requests:
            return []
        started = time.perf_counter()
        try:
            return self._decide_many(requests)
        finally:
            self.stats.seconds += time.perf_counter() - started

    def _decide_many(self, requests: Sequence[OracleRequest]) -> list[Outcome]:
        keys = [self.key_for(r) for r in requests]
        limit = self.backend.max_invalid_answers
        found = self._lookup(keys, count_invalid=limit is not None)
        self.stats.requests += len(requests)
        self.stats.exit_reviews += sum(r.purpose is Purpose.EXIT_REVIEW for r in requests)
        outcomes: dict[str, Outcome] = {
            k: Outcome(k, d, DecisionSource.JOURNAL) for k, d in found.answers.items()
        }
        self.stats.journal_hits += sum(1 for k in keys if k in found.answers)
        remembered = self._remembered([k for k in keys if k not in outcomes])
        for key, decision in remembered.items():
            outcomes[key] = Outcome(key, decision, DecisionSource.JOURNAL)
        self.stats.memory_hits += sum(1 for k in keys if k in remembered)
        # Identical requests in one batch are asked once.
        missing = {k: r for k, r in zip(keys, requests, strict=True) if k not in outcomes}
        for key, request in list(missing.items()):
            if limit is not None and found.invalid_answers.get(key, 0) >= limit:
                del missing[key]
                outcomes[key] = self._unanswerable(key, request, found.invalid_answers[key])
        self.stats.misses += len(missing)
        self.stats.review_misses += sum(r.purpose is Purpose.EXIT_REVIEW for r in missing.values())
        if self._link is not None and missing:
            reviews = sum(r.purpose is Purpose.EXIT_REVIEW for r in missing.values())
            prompts = [render(r) for r in missing.values()]
            self._link.send(
                AskEvent(
                    entries=len(missing) - reviews,
                    reviews=reviews,
                    chars=sum(len(p.system) + len(p.user) for p in prompts),
                )
            )
            if self._link.questions:
                for key, request in missing.items():
                    self._link.send(QuestionEvent(key=key, request=request.canonical_json()))
        if missing:
            outcomes.update(self._ask(missing, found.unreadable))
        return [outcomes[k] for k in keys]

    def _lookup(self, keys: list[str], *, count_invalid: bool) -> Lookup:
        try:
            found = self.journal.lookup_detailed(keys, count_invalid=count_invalid)
        except JournalError as exc:
            # Everything is a miss this time: asking again beats crashing the bot.
            self.stats.journal_read_failures += 1
            self._journal_trouble("read", exc)
            return Lookup()
        self._journal_works("read")
        return found

    def _unanswerable(self, key: str, request: OracleRequest, invalid: int) -> Outcome:
        self.stats.unanswerable += 1
        self.stats.fallbacks += 1
        detail = f"{invalid} unusable answers to this question; not asked again"
        result = failure(ErrorKind.UNANSWERABLE, detail, attempts=0)
        decision = self._fallback(request, result)
        return Outcome(key, decision, DecisionSource.FALLBACK, ErrorKind.UNANSWERABLE)

    def _ask(self, missing: dict[str, OracleRequest], unreadable: set[str]) -> dict[str, Outcome]:
        done: dict[str, Outcome] = {}
        # Live, the deadline sits inside; this outer bound only catches a wedged loop.
        outer = None if self.config.recording else self.config.timeout_s + _WEDGE_MARGIN_S
        try:
            self._loop.run(self._ask_all(missing, unreadable, done), timeout=outer)
        except FutureTimeout:
            for key, request in missing.items():
                if key not in done:
                    # Its task still owns what it sent: its own row takes its reservation over
                    # if it ever finishes, its cancellation keeps the request counted. This row
                    # only says why the candle got the fallback (nothing counted twice).
                    result = failure(ErrorKind.TIMEOUT, "oracle loop wedged", attempts=0)
                    outcome, entry = self._conclude(key, request, result)
                    if entry is not None:
                        self._backlog.append((entry, frozenset(), None))
                        self._writer.submit(self._drain)
                    done[key] = outcome
        return done

    async def _ask_all(
        self, missing: dict[str, OracleRequest], unreadable: set[str], done: dict[str, Outcome]
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if self.config.recording else loop.time() + self.config.timeout_s
        total = len(missing)
        self._report(0, total)

        async def one(key: str, request: OracleRequest) -> None:
            supersede = frozenset({key}) & unreadable
            done[key] = await self._ask_one(key, request, deadline, supersede)
            self._report(len(done), total)
            if self._link is not None:
                s = self.stats
                self._link.send(
                    DoneEvent(
                        failed=done[key].error_kind is not None,
                        calls=s.requests_sent,
                        tokens=s.tokens,
                        usd=s.cost_usd,
                    )
                )

        await asyncio.gather(*(one(k, r) for k, r in missing.items()))

    async def _ask_one(
        self,
        key: str,
        request: OracleRequest,
        deadline: float | None,
        supersede: frozenset[str],
    ) -> Outcome:
        if self._slots is not None and not await acquire_before(self._slots, deadline):
            detail = f"no free concurrency slot within {self.config.timeout_s:g} s"
            result = failure(ErrorKind.TIMEOUT, detail, attempts=0)
            return await self._finish(key, request, result, deadline, supersede)
        # In flight from the slot on: a stop waits for a request that is about to be sent.
        self._in_flight += 1
        reservation: int | None = None
        try:
            if self._stopping:
                return await self._finish(key, request, _stopped(), deadline, supersede)
            dedupe = True
            while True:
                refusal = self.guard.admit() if self.guard else None
                other: int | None = None
                if refusal is None and self.guard is not None:
                    assert self.shared is not None
                    refusal, reservation, other = await self.shared.reserve(
                        key, request, deadline, dedupe
                    )
                if other is None:
                    break
                # Another process asks (or answered) this question: its answer, not a second bill.
                assert self.shared is not None
                decision = await self.shared.answer_of_other(key, other, deadline)
                if decision is not None:
                    self.stats.answered_elsewhere += 1
                    return Outcome(key, decision, DecisionSource.JOURNAL)
                # Its process gave up, or the stored answer does not validate: ask here.
                dedupe = other >= 0
                if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                    detail = "another process was still asking this question at the deadline"
                    result = failure(ErrorKind.TIMEOUT, detail, attempts=0)
                    return await self._finish(key, request, result, deadline, supersede)
            if refusal is not None:
                result = failure(refusal.kind, refusal.detail, attempts=0)
                return await self._finish(key, request, result, deadline, supersede)
            admitted = self.guard is not None
            if self._stopping:  # stopped while reserving: nothing is sent
                if self.guard is not None:
                    self.guard.budget.settle(Spend())
                    self.guard.breaker.cancel_trial()
                return await self._finish(
                    key, request, _stopped(), deadline, supersede, reservation=reservation
                )
            _RESERVATION.set(reservation)
            try:
                result = await self._call(request, deadline)
            except BaseException:  # cancelled (wedged loop)
                if self.guard:
                    self.guard.settle(Spend(), ErrorKind.TIMEOUT)
                if reservation is not None and self.shared is not None:
                    self.shared.release(reservation, 1)  # it may have been sent: kept counted
                raise
            return await self._finish(
                key, request, result, deadline, supersede, admitted, reservation
            )
        finally:
            self._in_flight -= 1
            if self._slots is not None:
                self._slots.release()

    async def _retry_gate(self) -> str | None:
        """Before a retry: None lets it go; a text says why not."""
        if self._stopping:
            return "the recording was stopped"
        reservation = _RESERVATION.get()
        if reservation is None or self.shared is None:
            return None
        return await self.shared.extend(reservation, self.config.recording)

    # --- the recorder ---------------------------------------------------------------------
    def _recorder_gone(self) -> None:
        """On the lifeline thread: `record` ended. No request goes out any more; what is in
        flight gets its bounded time and is journaled; then this process ends."""
        self._stopping = True
        give_up = time.monotonic() + self.config.timeout_s + STOP_IN_FLIGHT_MARGIN_S
        while self._in_flight and time.monotonic() < give_up:
            time.sleep(0.05)  # a bounded wait for calls already sent, not a synchronisation
        self.flush(timeout=STOP_FLUSH_S)
        logging.shutdown()
        os._exit(EXIT_RECORDER_GONE)

    async def _call(self, request: OracleRequest, deadline: float | None) -> BackendResult:
        started = time.perf_counter()
        try:
            if deadline is None:
                result = await self.backend.decide(request, None)
            else:
                # The backend owns the deadline (its attempts and error kinds are exact); this
                # bound, a little later, only catches a backend that ignores it.
                loop = asyncio.get_running_loop()
                grace = max(0.0, deadline + _BACKEND_GRACE_S - loop.time())
                result = await asyncio.wait_for(self.backend.decide(request, deadline), grace)
        except TimeoutError:
            result = failure(
                ErrorKind.TIMEOUT,
                f"the backend ignored the deadline: no answer within {self.config.timeout_s:g} s",
            )
        except Exception as exc:  # a backend bug must not take the bot down
            logger.error("oracle backend raised: %s", self.scrub(traceback.format_exc()))
            result = failure(ErrorKind.BACKEND_ERROR, f"{type(exc).__name__}: {exc}")
        if result.record:  # a stand-in answer (replay miss policy) is not a backend call
            self.stats.backend_calls += 1
            if result.latency_ms == 0.0:
                elapsed_ms = (time.perf_counter() - started) * 1000
                result = result.model_copy(update={"latency_ms": elapsed_ms})
        return result

    async def _finish(
        self,
        key: str,
        request: OracleRequest,
        result: BackendResult,
        deadline: float | None,
        supersede: frozenset[str],
        admitted: bool = False,
        reservation: int | None = None,
    ) -> Outcome:
        """Conclude, journal (off the loop) and settle the spending gate, whatever fails."""
        kind: ErrorKind | None = ErrorKind.BACKEND_ERROR
        try:
            outcome, entry = self._conclude(key, request, result)
            kind = outcome.error_kind
            if entry is not None:
                await self._write(entry, supersede, deadline, reservation)
            elif reservation is not None and self.shared is not None:
                # Nothing to journal: keep what was sent, if any.
                self.shared.release(reservation, result.attempts)
            return outcome
        finally:
            if admitted and self.guard is not None:
                usage = result.usage
                tokens = usage.prompt_tokens + usage.output_tokens + usage.thinking_tokens
                self.guard.settle(Spend(result.attempts, tokens, result.cost_usd), kind)

    def _conclude(
        self, key: str, request: OracleRequest, result: BackendResult
    ) -> tuple[Outcome, JournalEntry | None]:
        """The outcome of one answer, counted; and the journal row it needs (scrubbed)."""
        result = self._scrubbed(_checked(result, request))
        entry = None
        if result.record:
            ident = self.backend.identity
            entry = JournalEntry(
                key=key,
                purpose=request.purpose,
                backend=ident.name,
                model=ident.model,
                prompt_version=ident.prompt_version,
                settings=ident.settings,
                request_json=request.canonical_json(),
                decision=result.decision if result.error_kind is None else None,
                raw_response=result.raw_response,
                usage=result.usage,
                latency_ms=result.latency_ms,
                cost_usd=result.cost_usd,
                model_version=result.model_version,
                error_kind=result.error_kind,
                error_detail=result.error_detail,
                attempts=result.attempts,
            )
            usage = result.usage
            self.stats.requests_sent += result.attempts
            self.stats.tokens += usage.prompt_tokens + usage.output_tokens + usage.thinking_tokens
            self.stats.cached_tokens += usage.cached_tokens
            self.stats.cost_usd += result.cost_usd
        if result.decision is not None and result.error_kind is None and result.record:
            self._note_success()
            return Outcome(key, result.decision, DecisionSource.BACKEND), entry
        if result.error_kind is not None:
            kind = result.error_kind
            self.stats.errors[kind.value] = self.stats.errors.get(kind.value, 0) + 1
            self._note_failure(kind, result)
        self.stats.fallbacks += 1
        decision = self._fallback(request, result)
        return Outcome(key, decision, DecisionSource.FALLBACK, result.error_kind), entry

    def _scrubbed(self, result: BackendResult) -> BackendResult:
        """The oracle's own pass over every text a row or a message could carry."""
        update: dict[str, Any] = {
            name: self.scrub(value)
            for name in ("raw_response", "error_detail", "model_version")
            if isinstance(value := getattr(result, name), str)
        }
        if result.decision is not None and result.decision.reasoning:
            reasoning = self.scrub(result.decision.reasoning)
            if reasoning != result.decision.reasoning:
                update["decision"] = result.decision.model_copy(update={"reasoning": reasoning})
        return result.model_copy(update=update) if update else result

    # --- journal writes, off the loop ------------------------------------------------------
    async def _write(
        self,
        entry: JournalEntry,
        supersede: frozenset[str],
        deadline: float | None,
        reservation: int | None = None,
    ) -> None:
        if entry.decision is not None:
            self._remember(entry.key, entry.decision)  # until the journal has it
        loop = asyncio.get_running_loop()
        self._backlog.append((entry, supersede, reservation))
        write = loop.run_in_executor(self._writer, self._drain)
        if deadline is None:
            await write  # recording: keep pace with the disk
            return
        try:
            # Live: a slow disk must not cost the candle. The write goes on; the answer is
            # served from memory until it lands.
            wait = max(_WRITE_FLOOR_S, deadline - loop.time())
            await asyncio.wait_for(asyncio.shield(write), wait)
        except TimeoutError:
            logger.debug("journal write still pending at the deadline")

    def _drain(self) -> None:
        """On the writer thread. Never raises: a row that cannot be written stays in the
        backlog (its answer in memory) and goes in with the next drain that succeeds."""
        while self._backlog:
            pending, keys, reservation = self._backlog[0]
            try:
                held = {pending.key: reservation} if reservation is not None else None
                new = self.journal.record_many([pending], supersede=keys, reservations=held)
            except Exception as exc:  # any failure is as bad for the disk: same treatment
                self.stats.journal_write_failures += 1
                if not isinstance(exc, JournalError):
                    exc = JournalError(f"{type(exc).__name__}: {exc}")
                self._journal_trouble("write", exc)
                while len(self._backlog) > _UNRECORDED_MAX:  # bounded, oldest first
                    dropped, _, _ = self._backlog.popleft()
                    logger.error("journal backlog full: row for %s dropped", dropped.key[:12])
                return
            self._backlog.popleft()
            self.stats.recorded += new
            self._forget(pending.key)
            self._journal_works("write")

    def _remember(self, key: str, decision: OracleDecision) -> None:
        with self._unrecorded_lock:
            self._unrecorded[key] = decision
            while len(self._unrecorded) > _UNRECORDED_MAX:
                self._unrecorded.popitem(last=False)

    def _forget(self, key: str) -> None:
        with self._unrecorded_lock:
            self._unrecorded.pop(key, None)

    def _remembered(self, keys: list[str]) -> dict[str, OracleDecision]:
        if not self._unrecorded:
            return {}
        with self._unrecorded_lock:
            return {k: self._unrecorded[k] for k in keys if k in self._unrecorded}

    def _journal_trouble(self, doing: str, exc: JournalError) -> None:
        if doing in self._journal_failing:
            logger.debug("journal %s failed again: %s", doing, exc)
            return
        self._journal_failing[doing] = exc.problem
        consequence = {
            "write": "answers are used for the running candle but not recorded: a restart asks "
            "them again (and pays again)",
            "read": "every question is a miss until it reads again",
            "reserve": "requests go out against this process's own daily budget only (other "
            "processes on the journal are not counted) until it takes reservations again",
        }[doing]
        self._announce(
            logging.ERROR,
            f"oracle journal {doing} failed ({exc.problem.value}): {exc} Meanwhile {consequence}.",
        )

    def _journal_works(self, doing: str) -> None:
        problem = self._journal_failing.pop(doing, None)
        if problem is not None:
            self._announce(
                logging.INFO, f"oracle journal {doing}s work again (after {problem.value})"
            )

    # --- fallback switches -------------------------------------------------------------------
    def _note_failure(self, kind: ErrorKind, result: BackendResult) -> None:
        name = self.backend.identity.name
        detail = result.error_detail
        fallback = self.config.fallback.value
        if kind is ErrorKind.MODEL_MISMATCH:
            self.stats.model_mismatches += 1
            served = result.model_version or "?"
            if served not in self._served_models:  # once per model that answers instead
                self._served_models.add(served)
                self._failing = kind
                self._announce(
                    logging.WARNING,
                    f"oracle {name}: {detail}; answering with fallback '{fallback}' meanwhile",
                )
                return
        if not kind.is_service:
            # Budget and circuit announce themselves; an unusable answer is about one question,
            # not the provider: counted and journaled, no switch to announce.
            logger.info("oracle %s: %s (%s); fallback for this question", name, kind.value, detail)
            return
        if self._failing is not None:
            logger.debug("oracle %s: %s (%s); fallback", name, kind.value, detail)
            return
        self._failing = kind
        self._announce(
            logging.WARNING,
            f"oracle {name} failed ({kind.value}: {detail}); answering with fallback "
            f"'{fallback}' until it answers again",
        )

    def _note_success(self) -> None:
        if self._failing is not None:
            self._failing = None
            self._announce(
                logging.INFO, f"oracle {self.backend.identity.name} answers again; fallback ended"
            )

    def _report(self, done: int, total: int) -> None:
        if self._on_progress is None:
            return
        s = self.stats
        progress = Progress(done, total, s.requests_sent, s.tokens, s.cost_usd, s.fallbacks)
        try:
            self._on_progress(progress)
        except Exception:  # a display problem must not stop a recording
            logger.exception("oracle progress callback failed")

    def _fallback(self, request: OracleRequest, result: BackendResult) -> OracleDecision:
        if result.error_kind is None and result.decision is not None:
            return result.decision  # an unrecorded stand-in (replay miss policy)
        if self.config.fallback is FallbackPolicy.RULES:
            return self.rules.decide_now(request)
        return OracleDecision.hold(f"fallback after {result.error_kind}")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every journal write submitted so far has landed (or failed).

        Rows the journal refused stay in the backlog; `pending_writes` says how many."""
        if self._closed:
            return True
        try:
            self._writer.submit(lambda: None).result(timeout=timeout)
        except FutureTimeout:
            return False
        return True

    @property
    def pending_writes(self) -> int:
        return len(self._backlog)

    def close(self) -> None:
        """Stop the loop thread, close the HTTP client, flush pending writes, close the journal.

        Idempotent; `stats` stays readable afterwards.
        """
        if self._closed:
            return
        self._closed = True
        if self._loop.started:
            try:
                self._loop.run(self.backend.aclose(), timeout=5.0)
            except Exception:  # closing is best effort; the journal still closes below
                logger.debug("backend close failed", exc_info=True)
        self._loop.stop()
        # After the loop: late releases are callbacks of the budget thread's own futures, so
        # they still run here (and never needed the loop).
        if self.shared is not None:
            self.shared.close()
        # Queued drains are redundant (the backlog holds their rows): one last drain here, and
        # a journal that is still locked gets seconds, not the full busy timeout.
        self._writer.shutdown(wait=True, cancel_futures=True)
        if self._backlog:
            self.journal.set_busy_timeout(min(2.0, self.journal.busy_timeout_s))
            self._drain()
        if self._backlog:
            logger.error(
                "oracle: %d answers could not be journaled and are lost with this process",
                len(self._backlog),
            )
        self.journal.close()


def _stopped() -> BackendResult:
    """A stand-in for a request that was not sent because the recording was stopped."""
    return BackendResult(
        decision=OracleDecision.hold("recording stopped"), attempts=0, record=False
    )


def _checked(result: BackendResult, request: OracleRequest) -> BackendResult:
    """Reject an answer that does not fit the question (e.g. 'exit' to an entry request)."""
    if result.decision is None or result.error_kind is not None:
        return result
    problem = result.decision.fits(request)
    if problem is None:
        return result
    return result.model_copy(
        update={
            "decision": None,
            "error_kind": ErrorKind.INVALID_DECISION,
            "error_detail": problem,
        }
    )


def open_oracle(
    config: OracleConfig,
    user_data_dir: Path,
    *,
    on_event: Callable[[str], None] | None = None,
) -> Oracle:
    """Oracle with the journal at the configured path (relative paths: under user_data)."""
    journal = Journal(config.resolved_journal_path(Path(user_data_dir)))
    return Oracle(config, journal, on_event=on_event)
