"""The oracle: journal-as-cache in front of a backend, with a deadline and an explicit fallback.

`Oracle.decide_many` is the only entry point the strategy needs. For a batch of requests it
1. computes every decision key and fetches all known answers in one journal query (replay),
2. asks the backend for the misses concurrently, each bounded by `timeout_s`,
3. records fresh answers (and failed attempts, with their error kind) in one transaction,
4. answers failures with the configured fallback and says so in its counters.
Backends run on one private event loop thread, so async clients keep their connections between
batches and the caller (Freqtrade's synchronous loop) never waits past the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from llm_oracle.backends import Backend, BackendResult, RulesBackend, build_backend
from llm_oracle.config import FallbackPolicy, OracleConfig
from llm_oracle.journal import Journal
from llm_oracle.models import (
    DecisionSource,
    ErrorKind,
    JournalEntry,
    OracleDecision,
    OracleRequest,
)
from llm_oracle.prompt import decision_key

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome:
    key: str
    decision: OracleDecision
    source: DecisionSource
    error_kind: ErrorKind | None = None


@dataclass(slots=True)
class OracleStats:
    requests: int = 0
    journal_hits: int = 0
    misses: int = 0
    backend_calls: int = 0
    recorded: int = 0
    fallbacks: int = 0
    seconds: float = 0.0  # wall time spent inside decide_many (lookups, calls, recording)
    errors: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"oracle: {self.requests} candidates, {self.journal_hits} journal hits, "
            f"{self.misses} misses, {self.backend_calls} backend calls, {self.recorded} recorded, "
            f"{self.fallbacks} fallbacks, errors: {errors}, {self.seconds:.2f} s in oracle"
        )


class _LoopThread:
    """A private asyncio loop on a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
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
    ) -> None:
        self.config = config
        self.journal = journal
        self.backend = backend or build_backend(config)
        self.rules = RulesBackend(config.rules)
        self.stats = OracleStats()
        self._loop = _LoopThread()

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
        timeout = self.config.timeout_s
        try:
            # The per-call deadline sits inside; this outer bound only catches a wedged loop.
            results = self._loop.run(self._ask_all(missing), timeout=timeout + 5.0)
        except FutureTimeout:
            results = {k: _failure(ErrorKind.TIMEOUT, "oracle loop wedged") for k in missing}
        entries: list[JournalEntry] = []
        outcomes: dict[str, Outcome] = {}
        ident = self.backend.identity
        for key, result in results.items():
            request = missing[key]
            result = _checked(result, request)
            if result.record:
                entries.append(
                    JournalEntry(
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
                    )
                )
            if result.decision is not None and result.error_kind is None and result.record:
                outcomes[key] = Outcome(key, result.decision, DecisionSource.BACKEND)
                continue
            if result.error_kind is not None:
                self.stats.errors[result.error_kind.value] = (
                    self.stats.errors.get(result.error_kind.value, 0) + 1
                )
                logger.warning(
                    "oracle %s failed (%s: %s); answering with fallback '%s'",
                    ident.name,
                    result.error_kind.value,
                    result.error_detail,
                    self.config.fallback.value,
                )
            outcomes[key] = Outcome(
                key, self._fallback(request, result), DecisionSource.FALLBACK, result.error_kind
            )
            self.stats.fallbacks += 1
        self.stats.recorded += self.journal.record_many(entries)
        return outcomes

    def _fallback(self, request: OracleRequest, result: BackendResult) -> OracleDecision:
        if result.error_kind is None and result.decision is not None:
            return result.decision  # an unrecorded stand-in (replay miss policy)
        if self.config.fallback is FallbackPolicy.RULES:
            return self.rules.decide_now(request)
        return OracleDecision.hold(f"fallback after {result.error_kind}")

    async def _ask_all(self, missing: dict[str, OracleRequest]) -> dict[str, BackendResult]:
        keys = list(missing)
        results = await asyncio.gather(*(self._ask_one(missing[k]) for k in keys))
        return dict(zip(keys, results, strict=True))

    async def _ask_one(self, request: OracleRequest) -> BackendResult:
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.backend.decide(request), self.config.timeout_s)
        except TimeoutError:
            result = _failure(ErrorKind.TIMEOUT, f"no answer within {self.config.timeout_s}s")
        except Exception as exc:  # a backend bug must not take the bot down
            logger.exception("oracle backend raised")
            result = _failure(ErrorKind.BACKEND_ERROR, f"{type(exc).__name__}: {exc}")
        if result.record:  # a stand-in answer (replay miss policy) is not a backend call
            self.stats.backend_calls += 1
            if result.latency_ms == 0.0:
                elapsed_ms = (time.perf_counter() - started) * 1000
                result = result.model_copy(update={"latency_ms": elapsed_ms})
        return result

    def close(self) -> None:
        try:
            self._loop.run(self.backend.aclose(), timeout=5.0)
        except Exception:  # closing is best effort; the journal still closes below
            logger.debug("backend close failed", exc_info=True)
        self._loop.stop()
        self.journal.close()


def _failure(kind: ErrorKind, detail: str) -> BackendResult:
    return BackendResult(decision=None, error_kind=kind, error_detail=detail)


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


def open_oracle(config: OracleConfig, user_data_dir: Path) -> Oracle:
    """Oracle with the journal at the configured path (relative paths: under user_data)."""
    return Oracle(config, Journal(config.resolved_journal_path(Path(user_data_dir))))
