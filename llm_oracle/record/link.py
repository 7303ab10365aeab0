"""The child's side of `llm-oracle record`, used by the oracle inside freqtrade.

`record` starts freqtrade with two inherited pipe ends, named in the environment:
- LLM_ORACLE_RECORD_FD: a pipe `record` reads, one JSON line per event (questions asked,
  decisions settled with the running calls/tokens/USD), for one progress bar over the whole run;
  with LLM_ORACLE_RECORD_QUESTIONS=1 also each missed question (key, request), for a batch job;
- LLM_ORACLE_LIFELINE_FD: the read end of a pipe whose only write end `record` holds. It reads
  EOF the moment `record` exits, however it ends (kill -9 included): the oracle then sends no
  more requests, settles what is in flight and ends the process.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

logger = logging.getLogger(__name__)

PROGRESS_FD_ENV = "LLM_ORACLE_RECORD_FD"
LIFELINE_FD_ENV = "LLM_ORACLE_LIFELINE_FD"
# "1": also send every missed question itself (key and request), for a batch job.
QUESTIONS_ENV = "LLM_ORACLE_RECORD_QUESTIONS"
# This `record` run's id: the oracle writes it into each decision row it journals, so `record`
# sums its own rows only (another process may be recording into the same journal).
RUN_ENV = "LLM_ORACLE_RECORD_RUN"
# A stopped child's shutdown: its calls in flight get timeout_s plus this margin, then its
# journal writes get STOP_FLUSH_S. `record` waits longer than both (`stop_grace_s`) before it
# signals the child's process group.
STOP_IN_FLIGHT_MARGIN_S = 3.0
STOP_FLUSH_S = 5.0
_PARENT_MARGIN_S = 5.0


def child_shutdown_s(timeout_s: float) -> float:
    """The longest a stopped child takes to settle what is in flight, journal it and exit."""
    return timeout_s + STOP_IN_FLIGHT_MARGIN_S + STOP_FLUSH_S


def stop_grace_s(timeout_s: float) -> float:
    """How long `record` waits for a stopped child before it signals the process group."""
    return child_shutdown_s(timeout_s) + _PARENT_MARGIN_S


class AskEvent(BaseModel):
    """A batch of misses the oracle is about to ask (counted for the estimate and the bar)."""

    ev: Literal["ask"] = "ask"
    entries: int = Field(ge=0)
    reviews: int = Field(ge=0)
    chars: int = Field(ge=0)


class QuestionEvent(BaseModel):
    """One missed question itself (with LLM_ORACLE_RECORD_QUESTIONS=1), for a batch job."""

    ev: Literal["q"] = "q"
    key: str
    request: str  # the request's canonical JSON


class DoneEvent(BaseModel):
    """One decision settled, with the run's calls, tokens and USD so far (progress only)."""

    ev: Literal["done"] = "done"
    failed: bool
    calls: int = Field(ge=0)
    tokens: int = Field(ge=0)
    usd: float = Field(ge=0)


RecordEvent = Annotated[AskEvent | QuestionEvent | DoneEvent, Field(discriminator="ev")]
EVENTS: TypeAdapter[AskEvent | QuestionEvent | DoneEvent] = TypeAdapter(RecordEvent)


def _fd(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value.isdigit():
        return None
    fd = int(value)
    try:
        os.fstat(fd)
    except OSError:  # not inherited (e.g. a grandchild that closed it): no link
        return None
    return fd


class RecorderLink:
    def __init__(
        self,
        progress_fd: int | None,
        lifeline_fd: int | None,
        questions: bool = False,
        run: str | None = None,
    ) -> None:
        self.questions = questions
        self.run = run
        self._progress_fd = progress_fd
        self._lifeline_fd = lifeline_fd
        self._lock = threading.Lock()
        self.dropped = 0  # progress events left out while `record` was not reading
        if progress_fd is not None:
            os.set_blocking(progress_fd, False)  # a full pipe must never block the oracle
        self._watchers: list[Callable[[], None]] = []
        self._watching = False

    def send(self, event: AskEvent | QuestionEvent | DoneEvent) -> None:
        """One event line to `record`; never raises (a gone reader is the lifeline's business).

        Progress (`DoneEvent`, sent from the oracle's event loop) never waits: while the pipe
        is full, or another thread is writing, it is dropped. Questions and asks (sent from
        Freqtrade's thread) must all arrive: they wait for room, a line at a time."""
        if self._progress_fd is None:
            return
        data = (event.model_dump_json() + "\n").encode()
        whole = len(data)
        droppable = isinstance(event, DoneEvent)
        if not self._lock.acquire(blocking=not droppable):  # lines never interleave
            self.dropped += 1
            return
        try:
            while data and self._progress_fd is not None:
                try:
                    data = data[os.write(self._progress_fd, data) :]
                except BlockingIOError:
                    if droppable and len(data) == whole:
                        self.dropped += 1  # nothing of the line written yet: leave it out
                        return
                    self._wait_writable()
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                self._progress_fd = None
        finally:
            self._lock.release()

    def _wait_writable(self) -> None:
        import select

        assert self._progress_fd is not None
        select.select([], [self._progress_fd], [], 1.0)

    def watch(self, on_lost: Callable[[], None]) -> None:
        """Call `on_lost` (on a daemon thread) once `record` is gone."""
        with self._lock:
            self._watchers.append(on_lost)
            if self._watching or self._lifeline_fd is None:
                return
            self._watching = True
        threading.Thread(target=self._watch, name="llm-oracle-lifeline", daemon=True).start()

    def _watch(self) -> None:
        assert self._lifeline_fd is not None
        while True:
            try:
                chunk = os.read(self._lifeline_fd, 64)
            except InterruptedError:
                continue
            except OSError:
                break
            if not chunk:  # EOF: the only writer, `record`, is gone
                break
        logger.warning("llm-oracle record is gone: no more requests are sent; stopping")
        for callback in list(self._watchers):
            try:
                callback()
            except Exception:  # one failing watcher must not keep the others from running
                logger.exception("recorder lifeline callback failed")


_LINK: RecorderLink | None = None
_LINK_LOCK = threading.Lock()


def recorder_link(env: Mapping[str, str] | None = None) -> RecorderLink | None:
    """This process's link to `record`, or None when `record` did not start it."""
    global _LINK
    env = os.environ if env is None else env
    with _LINK_LOCK:
        if _LINK is None:
            progress, lifeline = _fd(env, PROGRESS_FD_ENV), _fd(env, LIFELINE_FD_ENV)
            if progress is None and lifeline is None:
                return None
            run = env.get(RUN_ENV, "").strip() or None
            _LINK = RecorderLink(progress, lifeline, env.get(QUESTIONS_ENV) == "1", run)
        return _LINK
