"""Progress of recording over history: the oracle's per-batch callback, and `record`'s one bar.

The oracle reports after every settled miss. Started by `llm-oracle record`, it sends events to
`record` instead (`llm_oracle.record.link`), which draws one bar for the whole run
(`RunProgress`). Bars go to stderr so Freqtrade's own output (and the "oracle: ..." summary on
stdout) stays parseable; the in-process bar is off unless `llm_oracle.progress` is true or the
environment sets LLM_ORACLE_PROGRESS=1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from llm_oracle.record.link import AskEvent, DoneEvent, QuestionEvent

PROGRESS_ENV = "LLM_ORACLE_PROGRESS"


@dataclass(frozen=True, slots=True)
class Progress:
    done: int  # misses of this batch settled so far
    total: int  # misses of this batch
    calls: int  # requests sent by this oracle so far (retries included)
    tokens: int
    cost_usd: float
    fallbacks: int


ProgressCallback = Callable[[Progress], None]


def progress_wanted(configured: bool) -> bool:
    return configured or os.environ.get(PROGRESS_ENV, "").strip().lower() in ("1", "true", "yes")


class TqdmProgress:
    """One bar per batch: done/total, rate and ETA from tqdm; calls, tokens and USD as postfix."""

    def __init__(self, file: TextIO | None = None) -> None:
        self._file = file or sys.stderr
        self._bar: Any = None

    def __call__(self, p: Progress) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(
                total=p.total, desc="oracle", unit="dec", file=self._file, mininterval=0.5
            )
        self._bar.set_postfix_str(
            f"calls {p.calls}, tokens {p.tokens}, ${p.cost_usd:.4f}, fallbacks {p.fallbacks}",
            refresh=False,
        )
        self._bar.update(p.done - self._bar.n)
        if p.done >= p.total:
            self._bar.close()
            self._bar = None


class RunProgress:
    """`llm-oracle record`'s one bar over the whole run, fed by the child's events.

    Decisions settled / decisions the counting pass expects (the total grows if the run asks
    more), ETA from tqdm; calls, tokens and USD of the run so far as postfix.
    """

    def __init__(self, total: int | None, file: TextIO | None = None) -> None:
        from tqdm import tqdm

        self.done = 0
        self.failed = 0
        self.asked = 0
        self.calls = 0
        self.tokens = 0
        self.usd = 0.0
        self._bar = tqdm(
            total=total, desc="record", unit="dec", file=file or sys.stderr, mininterval=0.5
        )

    def event(self, event: AskEvent | QuestionEvent | DoneEvent) -> None:
        """An event of the child (`llm_oracle.record.link`): asks and settled decisions."""
        if isinstance(event, AskEvent):
            self.asked += event.entries + event.reviews
            return
        if not isinstance(event, DoneEvent):
            return
        self.done += 1
        self.failed += event.failed
        self.calls, self.tokens, self.usd = event.calls, event.tokens, event.usd
        bar = self._bar
        if bar.total is not None and self.done > bar.total:
            bar.total = self.done
        bar.set_postfix_str(
            f"calls {self.calls}, tokens {self.tokens}, ${self.usd:.4f}, failed {self.failed}",
            refresh=False,
        )
        bar.update(self.done - bar.n)

    def close(self) -> None:
        self._bar.close()
