"""Freqtrade as `record`'s child: its own process group, never outliving `record`.

- The child runs in a new session, so a terminal's Ctrl-C reaches `record` only, which stops the
  child the one way it always stops it (below), instead of both racing on the same signal.
- It inherits two pipe ends (`llm_oracle.record.link`): progress events come back on one; the
  other is its lifeline, whose only write end `record` holds. Closing it (or `record` dying, even
  by kill -9) makes the oracle in the child send nothing more, settle what is in flight and exit.
- `stop` closes the lifeline, waits a bounded time for that exit, then signals the whole process
  group (SIGTERM, then SIGKILL): no freqtrade process is left behind.
- The merged config goes to freqtrade on stdin (`--config -`): no temporary file to leave behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from llm_oracle.record.link import (
    EVENTS,
    LIFELINE_FD_ENV,
    PROGRESS_FD_ENV,
    AskEvent,
    DoneEvent,
    QuestionEvent,
)

logger = logging.getLogger(__name__)
Event = AskEvent | QuestionEvent | DoneEvent


class Child:
    def __init__(
        self,
        command: list[str],
        config: dict[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.command = command
        self._config = config
        self._env = dict(os.environ if env is None else env)
        self._on_event = on_event
        self.proc: subprocess.Popen[bytes] | None = None
        self._lifeline_w: int | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        progress_r, progress_w = os.pipe()
        lifeline_r, self._lifeline_w = os.pipe()
        env = {**self._env, PROGRESS_FD_ENV: str(progress_w), LIFELINE_FD_ENV: str(lifeline_r)}
        try:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                env=env,
                pass_fds=(progress_w, lifeline_r),
                start_new_session=True,
            )
        finally:
            os.close(progress_w)  # the child's ends: only the child holds them now
            os.close(lifeline_r)
        self._reader = threading.Thread(
            target=self._read, args=(progress_r,), name="record-progress", daemon=True
        )
        self._reader.start()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(self._config).encode())
            self.proc.stdin.close()
        except BrokenPipeError:  # the child died at once; its exit code tells why
            pass

    def _read(self, fd: int) -> None:
        """Until the child closes the pipe, whatever a line holds: a reader that stopped would
        let the pipe fill (the child drops progress then, but waits to send questions)."""
        failed = False
        with os.fdopen(fd, "rb") as stream:
            for line in stream:
                try:
                    event = EVENTS.validate_json(line)
                except ValidationError:
                    continue
                if self._on_event is None:
                    continue
                try:
                    self._on_event(event)
                except Exception:
                    if not failed:  # once: the same bug would fill the log
                        logger.exception("record: handling the child's event %s failed", event)
                        failed = True

    def wait(self, timeout: float | None = None) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every progress event the child wrote has been handled."""
        if self._reader is not None:
            self._reader.join(timeout)

    def release_lifeline(self) -> None:
        """Tell the child to stop: no more requests, settle what is in flight, exit."""
        if self._lifeline_w is not None:
            fd, self._lifeline_w = self._lifeline_w, None
            os.close(fd)

    def signal_group(self, signum: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
            os.killpg(self.proc.pid, signum)

    def stop(self, grace_s: float) -> int:
        """Stop the child and everything in its process group; returns its exit code."""
        self.release_lifeline()
        code = self.wait(grace_s)
        if code is None:
            self.signal_group(signal.SIGTERM)
            code = self.wait(5.0)
        if code is None:
            self.signal_group(signal.SIGKILL)
            code = self.wait(5.0)
        # Anything it started that is still in its group goes too.
        self.signal_group(signal.SIGKILL)
        return code if code is not None else -signal.SIGKILL
