"""Progress of long batches (recording over history): a callback, and a tqdm bar built on it.

The oracle reports after every settled miss. The bar goes to stderr so Freqtrade's own output
(and the "oracle: ..." summary on stdout) stays parseable; it is off unless
`llm_oracle.progress` is true or the environment sets LLM_ORACLE_PROGRESS=1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

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
