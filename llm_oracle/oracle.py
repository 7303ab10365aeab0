"""The oracle: journal-as-cache in front of a backend, with a deadline and an explicit fallback.

`Oracle.decide_many` is the only entry point the strategy needs. For a batch of requests it
1. computes every decision key and fetches all known answers in one journal query (replay),
2. asks the backend for the misses concurrently: each takes a concurrency slot, passes the
   spending gate (daily budget, circuit breaker) and is bounded by the deadline,
3. records each answer (or failed attempt, with its error kind) the moment it arrives, in its own
   transaction: a kill mid-batch loses nothing answered, and a restart never repeats a call,
4. answers failures with the configured fallback, and announces switches to and from the fallback
   once (log line + `drain_events()` / `on_event`, for the strategy's dp.send_msg).
Live, the whole batch answers within `timeout_s` (a request still waiting for a slot then gets the
fallback); with `recording` every request waits for its slot, and `timeout_s` bounds each call.
Backends run on one private event loop thread, so async clients keep their connections between
batches and the caller (Freqtrade's synchronous loop) never waits past the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from llm_oracle.backends import Backend, BackendResult, RulesBackend, build_backend, failure
from llm_oracle.config import FallbackPolicy, LimitsConfig, OracleConfig
from llm_oracle.journal import Journal
from llm_oracle.limits import CircuitBreaker, DailyBudget, Spend, SpendGuard, acquire_before
from llm_oracle.models import (
    DecisionSource,
    ErrorKind,
    JournalEntry,
    OracleDecision,
    OracleRequest,
    Purpose,
)
from llm_oracle.progress import Progress, ProgressCallback, TqdmProgress, progress_wanted
from llm_oracle.prompt import decision_key

logger = logging.getLogger(__name__)
T = TypeVar("T")
_WEDGE_MARGIN_S = 1.0  # beyond the deadline, only a loop stuck in blocking code is waited for
# Refusals the spending gate announces itself (once per switch), not as backend failures.
_GATE_KINDS = frozenset({ErrorKind.BUDGET_EXHAUSTED, ErrorKind.CIRCUIT_OPEN})


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
    backend_calls: int = 0
    recorded: int = 0
    fallbacks: int = 0
    seconds: float = 0.0  # wall time spent inside decide_many (lookups, calls, recording)
    errors: dict[str, int] = field(default_factory=dict)
    requests_sent: int = 0  # HTTP requests to a provider, retries included
    tokens: int = 0
    cost_usd: float = 0.0

    def summary(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"oracle: {self.requests - self.exit_reviews} candidates + {self.exit_reviews} exit "
            f"reviews, {self.journal_hits} journal hits, "
            f"{self.misses} misses, {self.backend_calls} backend calls, {self.recorded} recorded, "
            f"{self.fallbacks} fallbacks, errors: {errors}, {self.requests_sent} requests sent, "
            f"{self.tokens} tokens, ${self.cost_usd:.4f}, {self.seconds:.2f} s in oracle"
        )


class _LoopThread:
    """A private asyncio loop on a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="llm-oracle-loop", daemon=True
                ).start()
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            raise

    def stop(self) -> None:
        with self._lock:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop = None


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
        self._failing: ErrorKind | None = None
        limits = self.backend.limits
        # Bound here, not in the backend, so the gate below is passed by at most this many.
        self._slots = asyncio.Semaphore(limits.concurrency) if limits else None
        self.guard = self._guard(limits) if limits else None

    def _guard(self, limits: LimitsConfig) -> SpendGuard:
        name = self.backend.identity.name

        def spent_since(since: datetime) -> Spend:
            return Spend(*self.journal.spend_since(name, since))

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
    def _announce(self, level: int, message: str) -> None:
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
        ident = self.backend.identity
        return decision_key(request, ident.name, ident.model, ident.prompt_version)

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
        known = self.journal.lookup(keys)
        self.stats.requests += len(requests)
        self.stats.exit_reviews += sum(r.purpose is Purpose.EXIT_REVIEW for r in requests)
        self.stats.journal_hits += sum(1 for k in keys if k in known)
        outcomes: dict[str, Outcome] = {
            k: Outcome(k, d, DecisionSource.JOURNAL) for k, d in known.items()
        }
        # Identical requests in one batch are asked once.
        missing = {k: r for k, r in zip(keys, requests, strict=True) if k not in known}
        self.stats.misses += len(missing)
        if missing:
            outcomes.update(self._ask(missing))
        return [outcomes[k] for k in keys]

    def _ask(self, missing: dict[str, OracleRequest]) -> dict[str, Outcome]:
        done: dict[str, Outcome] = {}
        # Live, the deadline sits inside; this outer bound only catches a wedged loop.
        outer = None if self.config.recording else self.config.timeout_s + _WEDGE_MARGIN_S
        try:
            self._loop.run(self._ask_all(missing, done), timeout=outer)
        except FutureTimeout:
            for key, request in missing.items():
                if key not in done:
                    done[key] = self._settle(
                        key, request, failure(ErrorKind.TIMEOUT, "oracle loop wedged")
                    )
        return done

    async def _ask_all(self, missing: dict[str, OracleRequest], done: dict[str, Outcome]) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if self.config.recording else loop.time() + self.config.timeout_s
        total = len(missing)
        self._report(0, total)

        async def one(key: str, request: OracleRequest) -> None:
            done[key] = await self._ask_one(key, request, deadline)
            self._report(len(done), total)

        await asyncio.gather(*(one(k, r) for k, r in missing.items()))

    async def _ask_one(self, key: str, request: OracleRequest, deadline: float | None) -> Outcome:
        if self._slots is not None and not await acquire_before(self._slots, deadline):
            detail = f"no free concurrency slot within {self.config.timeout_s:g} s"
            return self._settle(key, request, failure(ErrorKind.TIMEOUT, detail, attempts=0))
        try:
            refusal = self.guard.admit() if self.guard else None
            if refusal is not None:
                result = failure(refusal.kind, refusal.detail, attempts=0)
                return self._settle(key, request, result)
            try:
                result = await self._call(request, deadline)
            except BaseException:  # cancelled (wedged loop): give the reservation back
                if self.guard:
                    self.guard.settle(Spend(), ErrorKind.TIMEOUT)
                raise
            # Journal first: a budget that rolls over to a new day re-reads it from the rows.
            outcome = self._settle(key, request, result)
            if self.guard:
                usage = result.usage
                tokens = usage.prompt_tokens + usage.output_tokens + usage.thinking_tokens
                spend = Spend(result.attempts, tokens, result.cost_usd)
                self.guard.settle(spend, outcome.error_kind)
            return outcome
        finally:
            if self._slots is not None:
                self._slots.release()

    async def _call(self, request: OracleRequest, deadline: float | None) -> BackendResult:
        started = time.perf_counter()
        try:
            if deadline is None:
                result = await self.backend.decide(request, None)
            else:
                remaining = max(0.0, deadline - asyncio.get_running_loop().time())
                result = await asyncio.wait_for(self.backend.decide(request, deadline), remaining)
        except TimeoutError:
            result = failure(ErrorKind.TIMEOUT, f"no answer within {self.config.timeout_s:g} s")
        except Exception as exc:  # a backend bug must not take the bot down
            logger.exception("oracle backend raised")
            result = failure(ErrorKind.BACKEND_ERROR, f"{type(exc).__name__}: {exc}")
        if result.record:  # a stand-in answer (replay miss policy) is not a backend call
            self.stats.backend_calls += 1
            if result.latency_ms == 0.0:
                elapsed_ms = (time.perf_counter() - started) * 1000
                result = result.model_copy(update={"latency_ms": elapsed_ms})
        return result

    def _settle(self, key: str, request: OracleRequest, result: BackendResult) -> Outcome:
        """Journal one answer now (its own transaction), count it, pick the fallback if needed."""
        result = _checked(result, request)
        ident = self.backend.identity
        if result.record:
            entry = JournalEntry(
                key=key,
                purpose=request.purpose,
                backend=ident.name,
                model=ident.model,
                prompt_version=ident.prompt_version,
                request_json=request.canonical_json(),
                decision=result.decision,
                raw_response=result.raw_response,
                usage=result.usage,
                latency_ms=result.latency_ms,
                cost_usd=result.cost_usd,
                model_version=result.model_version,
                error_kind=result.error_kind,
                error_detail=result.error_detail,
                attempts=result.attempts,
            )
            self.stats.recorded += self.journal.record_many([entry])
            usage = result.usage
            self.stats.requests_sent += result.attempts
            self.stats.tokens += usage.prompt_tokens + usage.output_tokens + usage.thinking_tokens
            self.stats.cost_usd += result.cost_usd
        if result.decision is not None and result.error_kind is None and result.record:
            self._note_success()
            return Outcome(key, result.decision, DecisionSource.BACKEND)
        if result.error_kind is not None:
            kind = result.error_kind
            self.stats.errors[kind.value] = self.stats.errors.get(kind.value, 0) + 1
            self._note_failure(kind, result.error_detail)
        self.stats.fallbacks += 1
        return Outcome(
            key, self._fallback(request, result), DecisionSource.FALLBACK, result.error_kind
        )

    def _note_failure(self, kind: ErrorKind, detail: str | None) -> None:
        name = self.backend.identity.name
        if kind in _GATE_KINDS or self._failing is not None:
            logger.debug("oracle %s: %s (%s); fallback", name, kind.value, detail)
            return
        self._failing = kind
        self._announce(
            logging.WARNING,
            f"oracle {name} failed ({kind.value}: {detail}); answering with fallback "
            f"'{self.config.fallback.value}' until it answers again",
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

    def close(self) -> None:
        try:
            self._loop.run(self.backend.aclose(), timeout=5.0)
        except Exception:  # closing is best effort; the journal still closes below
            logger.debug("backend close failed", exc_info=True)
        self._loop.stop()
        self.journal.close()


def _checked(result: BackendResult, request: OracleRequest) -> BackendResult:
    """Reject an answer that does not fit the question (e.g. 'exit' to an entry request)."""
    if result.decision is None:
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
