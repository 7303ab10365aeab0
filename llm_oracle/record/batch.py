"""Half price, later: recording through Gemini's Batch API (`record --tier batch`).

Rounds. A counting pass lists the questions the journal cannot answer (the oracle in the child
sends each with its key). They are reserved against the daily caps (the shared journal budget),
then sent as one batch job of inlined requests (google-genai 3.4: `client.aio.batches.create`,
`POST models/<model>:batchGenerateContent`). The job's name and its requests are journaled the
moment the job exists, so a restarted `record` polls the same job (`batches.get`) instead of
paying again. The job is journaled first as an intent under a unique display name: a `record`
that dies between creating the job and journaling its name finds it again by that name
(`batches.list`), and a create that fails gives its reservations back at once. When the job is
done, each answer is checked exactly like a synchronous one
(`GeminiBackend.interpret`, then the question's own fit) and journaled at the batch price, taking
its reservation over. A round asks entries while any is missing (exit reviews in a counting pass
may belong to trades only the local stand-in answers opened), then the exit reviews the recorded
answers' trades raise, round after round. A round with nothing to ask ends the recording.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as day_time

from llm_oracle.backends.base import BackendResult, failure
from llm_oracle.backends.gemini import GeminiBackend
from llm_oracle.journal import Caps, Journal
from llm_oracle.models import ErrorKind, JournalEntry, OracleRequest
from llm_oracle.prompt import render
from llm_oracle.record.link import AskEvent, DoneEvent, QuestionEvent

BATCH_PRICE_FACTOR = 0.5  # ai.google.dev/gemini-api/docs/batch-mode: 50% of the standard price
_DONE = {
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_PARTIALLY_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_EXPIRED",
}
NOT_FOUND = "NOT_FOUND"  # the provider does not know the job (deleted, or another project's)
CREATING = "creating"  # journaled intent: the job may or may not exist at the provider
# A batch job runs (or waits) at most this long before the provider expires it: its questions
# are being asked, for every other process on the journal, that long.
JOB_LIFETIME_S = 48 * 3600.0
# A job may wait for hours: a line when its state changes, and one this often while it waits,
# so a quiet terminal is never mistaken for a hung `record`.
STATUS_EVERY_S = 600.0
_INTENT_PREFIX = "llm-oracle-record-"


@dataclass(slots=True)
class Questions:
    """What a counting pass found unanswered, by decision key."""

    requests: dict[str, OracleRequest] = field(default_factory=dict)

    def add(self, event: AskEvent | QuestionEvent | DoneEvent) -> None:
        if isinstance(event, QuestionEvent):
            self.requests[event.key] = OracleRequest.model_validate_json(event.request)


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

    @property
    def name(self) -> str:
        return self.backend.identity.name

    async def resume_jobs(self) -> list[str]:
        """Jobs of earlier runs still to collect. An intent whose job was created is adopted
        (found by its display name); one that never became a job is dropped, its reservations
        given back."""
        jobs = []
        for job in self.journal.open_batch_jobs(self.name, self.model):
            if self.journal.batch_job_state(job) == CREATING:
                found = await self._find(job)
                if found is None:
                    self.journal.drop_batch_job(job)
                    self._say(f"batch job {job} was never created; its questions are asked again")
                    continue
                self.journal.batch_job_created(job, found)
                job = found
            jobs.append(job)
        return jobs

    async def _find(self, display_name: str) -> str | None:
        client = self.backend.client()
        assert client is not None
        async for job in await client.aio.batches.list(config={"page_size": 100}):
            if job.display_name == display_name and job.name:
                return job.name
        return None

    def reserve(self, questions: Questions) -> tuple[dict[str, int], str | None]:
        """Reservations for as many questions as the daily caps allow (and why not more), each
        with the tokens and USD it is expected to cost, open for the job's whole lifetime."""
        today = datetime.combine(datetime.now(UTC).date(), day_time(0), tzinfo=UTC)
        measured = self.journal.mean_usage(self.name, self.model)
        held: dict[str, int] = {}
        for key, request in questions.requests.items():
            reserved = self.journal.reserve(
                self.name,
                today,
                self.caps,
                key=key,
                expires_s=JOB_LIFETIME_S,
                estimate=self.backend.estimate_spend(request, measured),
            )
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
        # The intent first: whatever happens from here, a later run knows what was paid for.
        intent = f"{_INTENT_PREFIX}{uuid.uuid4().hex}"
        self.journal.add_batch_job(
            intent,
            self.name,
            self.model,
            [(k, questions.requests[k].canonical_json(), held[k]) for k in held],
            state=CREATING,
        )
        try:
            job = await client.aio.batches.create(
                model=self.model, src=inlined, config={"display_name": intent}
            )
        except Exception:
            # Refused, or the answer was lost: a job that exists anyway is adopted, otherwise
            # its reservations go back now (not at 00:00 UTC) for every process.
            found = await self._find(intent)
            if found is None:
                self.journal.drop_batch_job(intent)
                raise
            self.journal.batch_job_created(intent, found)
            return found
        assert job.name
        self.journal.batch_job_created(intent, job.name)
        self._say(f"batch job {job.name}: {len(inlined)} questions submitted (journaled)")
        return job.name

    async def collect(self, name: str) -> JobResult | None:
        """Poll the job until it is done, then journal its answers; None when told to stop."""
        from google.genai import errors

        client = self.backend.client()
        assert client is not None
        started = time.monotonic()
        said: tuple[str, float] | None = None  # (state, when) of the last status line
        while True:
            try:
                job = await client.aio.batches.get(name=name)
            except errors.ClientError as exc:
                if exc.code != 404:
                    raise
                # Gone at the provider: nothing will come; its questions fail (asked again).
                job, state = None, NOT_FOUND
                break
            state = str(getattr(job.state, "value", job.state))
            if state in _DONE:
                break
            now = time.monotonic()
            if said is None or said[0] != state or now - said[1] >= STATUS_EVERY_S:
                waited_for = timedelta(seconds=round(now - started))
                self._say(
                    f"batch job {name}: {state} after {waited_for}, polled every "
                    f"{self.poll_s:g} s (Google targets 24 h); a stop leaves it running and the "
                    "same command collects it"
                )
                said = (state, now)
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
        responses = (job.dest.inlined_responses if job is not None and job.dest else None) or []
        for item in responses:
            key = (item.metadata or {}).get("key", "")
            if key not in pending:
                continue
            request, reservation = pending.pop(key)
            if item.error is not None or item.response is None:
                detail = self.backend.scrub(f"batch answer error: {item.error}")
                answer = failure(ErrorKind.SERVER_ERROR, detail[:600], latency_ms=latency_ms)
            else:
                answer = self.backend.interpret(
                    item.response, request, attempts=1, latency_ms=latency_ms
                )
            entries.append(self._entry(key, request, answer, self._day_of(reservation)))
            if reservation is not None:
                held[key] = reservation
        for key, (request, reservation) in pending.items():  # no answer: the job failed
            detail = f"batch job {name} ended {state} without an answer"
            answer = failure(ErrorKind.SERVER_ERROR, detail)
            entries.append(self._entry(key, request, answer, self._day_of(reservation)))
            if reservation is not None:
                held[key] = reservation
        self.journal.record_many(entries, reservations=held)
        self.journal.finish_batch_job(name, state)
        result.answers = sum(1 for e in entries if e.error_kind is None)
        result.failed = len(entries) - result.answers
        return result

    def _day_of(self, reservation: int | None) -> datetime | None:
        """When an answer is charged: a job collected on a later UTC day than it was reserved
        counts on the day of its reservation (that day's caps let it go)."""
        if reservation is None:
            return None
        reserved = self.journal.reservation_day(reservation)
        if reserved is None or reserved.date() == datetime.now(UTC).date():
            return None
        return reserved + timedelta(microseconds=1)

    def _entry(
        self,
        key: str,
        request: OracleRequest,
        result: BackendResult,
        charged: datetime | None = None,
    ) -> JournalEntry:
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
            **({"created_at": charged} if charged is not None else {}),
        )
