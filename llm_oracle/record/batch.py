"""Half price, later: recording through Gemini's Batch API (`record --tier batch`).

Rounds. A counting pass lists the questions the journal cannot answer (the oracle in the child
sends each with its key). They are reserved against the daily caps (the shared journal budget),
then sent as one batch job of inlined requests (google-genai 3.4: `client.aio.batches.create`,
`POST models/<model>:batchGenerateContent`). The job's name and its requests are journaled the
moment the job exists, so a restarted `record` polls the same job (`batches.get`) instead of
paying again. When the job is done, each answer is checked exactly like a synchronous one
(`GeminiBackend.interpret`, then the question's own fit) and journaled at the batch price, taking
its reservation over. A round asks entries while any is missing (exit reviews in a counting pass
may belong to trades only the local stand-in answers opened), then the exit reviews the recorded
answers' trades raise, round after round. A round with nothing to ask ends the recording.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as day_time
from typing import Any

from llm_oracle.backends.base import BackendResult, failure
from llm_oracle.backends.gemini import GeminiBackend
from llm_oracle.journal import Caps, Journal
from llm_oracle.models import ErrorKind, JournalEntry, OracleRequest
from llm_oracle.prompt import render

BATCH_PRICE_FACTOR = 0.5  # ai.google.dev/gemini-api/docs/batch-mode: 50% of the standard price
_DONE = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


@dataclass(slots=True)
class Questions:
    """What a counting pass found unanswered, by decision key."""

    requests: dict[str, OracleRequest] = field(default_factory=dict)

    def add(self, event: dict[str, Any]) -> None:
        if event.get("ev") == "q":
            self.requests[str(event["key"])] = OracleRequest.model_validate_json(
                str(event["request"])
            )


@dataclass(slots=True)
class JobResult:
    name: str
    state: str
    answers: int = 0
    failed: int = 0


class BatchRecorder:
    def __init__(
        self,
        backend: GeminiBackend,
        journal: Journal,
        caps: Caps,
        *,
        poll_s: float,
        stop: Callable[[], bool],
        say: Callable[[str], None],
    ) -> None:
        backend.price_factor = BATCH_PRICE_FACTOR
        self.backend = backend
        self.journal = journal
        self.caps = caps
        self.poll_s = poll_s
        self._stop = stop
        self._say = say

    @property
    def model(self) -> str:
        return self.backend.config.model

    def open_jobs(self) -> list[str]:
        return self.journal.open_batch_jobs("gemini", self.model)

    def reserve(self, questions: Questions) -> tuple[dict[str, int], str | None]:
        """Reservations for as many questions as the daily caps allow (and why not more)."""
        today = datetime.combine(datetime.now(UTC).date(), day_time(0), tzinfo=UTC)
        held: dict[str, int] = {}
        for key in questions.requests:
            reserved = self.journal.reserve("gemini", today, self.caps, key=key)
            if reserved.exhausted is not None:
                return held, reserved.exhausted
            if reserved.id is not None:
                held[key] = reserved.id
        return held, None

    async def submit(self, questions: Questions, held: dict[str, int]) -> str:
        from google.genai import types

        client = self.backend.client()
        assert client is not None  # record checked the key
        inlined = []
        for key in held:
            request = questions.requests[key]
            prompt = render(request)
            config = self.backend.generation_config(prompt.system, request)
            # Client-side only settings have no place in a stored request.
            config = config.model_copy(update={"automatic_function_calling": None})
            inlined.append(
                types.InlinedRequest(
                    model=self.model, contents=prompt.user, config=config, metadata={"key": key}
                )
            )
        job = await client.aio.batches.create(
            model=self.model, src=inlined, config={"display_name": "llm-oracle record"}
        )
        assert job.name
        self.journal.add_batch_job(
            job.name,
            "gemini",
            self.model,
            [(k, questions.requests[k].canonical_json(), held[k]) for k in held],
        )
        self._say(f"batch job {job.name}: {len(inlined)} questions submitted (journaled)")
        return job.name

    async def collect(self, name: str) -> JobResult | None:
        """Poll the job until it is done, then journal its answers; None when told to stop."""
        client = self.backend.client()
        assert client is not None
        started = time.monotonic()
        while True:
            job = await client.aio.batches.get(name=name)
            state = str(getattr(job.state, "value", job.state))
            if state in _DONE:
                break
            if self._stop():
                return None
            waited = 0.0
            while waited < self.poll_s and not self._stop():
                await asyncio.sleep(min(0.2, self.poll_s))
                waited += 0.2
        result = JobResult(name, state)
        pending = {
            k: (OracleRequest.model_validate_json(r), res)
            for k, r, res in self.journal.batch_requests(name)
        }
        entries: list[JournalEntry] = []
        held: dict[str, int] = {}
        latency_ms = (time.monotonic() - started) * 1000
        responses = (job.dest.inlined_responses if job.dest else None) or []
        for item in responses:
            key = (item.metadata or {}).get("key", "")
            if key not in pending:
                continue
            request, reservation = pending.pop(key)
            if item.error is not None or item.response is None:
                detail = f"batch answer error: {item.error}"
                answer = failure(ErrorKind.SERVER_ERROR, detail[:600], latency_ms=latency_ms)
            else:
                answer = self.backend.interpret(
                    item.response, request, attempts=1, latency_ms=latency_ms
                )
            entries.append(self._entry(key, request, answer))
            if reservation is not None:
                held[key] = reservation
        for key, (request, reservation) in pending.items():  # no answer: the job failed
            detail = f"batch job {name} ended {state} without an answer"
            entries.append(self._entry(key, request, failure(ErrorKind.SERVER_ERROR, detail)))
            if reservation is not None:
                held[key] = reservation
        self.journal.record_many(entries, reservations=held)
        self.journal.finish_batch_job(name, state)
        result.answers = sum(1 for e in entries if e.error_kind is None)
        result.failed = len(entries) - result.answers
        return result

    def _entry(self, key: str, request: OracleRequest, result: BackendResult) -> JournalEntry:
        if result.decision is not None and result.error_kind is None:
            problem = result.decision.fits(request)
            if problem is not None:
                result = result.model_copy(
                    update={
                        "decision": None,
                        "error_kind": ErrorKind.INVALID_DECISION,
                        "error_detail": problem,
                    }
                )
        ident = self.backend.identity
        return JournalEntry(
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
