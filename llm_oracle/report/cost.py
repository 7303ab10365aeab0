"""The API bill of the decisions a report evaluates, read from the journal (read-only).

Every row of the source for a key the range used counts, failed attempts included: they were
paid for too. Nothing is charged for decisions of other ranges or other backends.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from llm_oracle.journal import Journal

_CHUNK = 500


class Bill(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usd: float
    rows: int  # journal rows charged (answers and failed attempts)
    requests: int  # requests sent to the provider, retries included
    decisions: int  # distinct questions answered


def bill(journal_path: Path, backend: str, model: str, keys: Collection[str]) -> Bill:
    if not journal_path.exists() or not keys:
        return Bill(usd=0.0, rows=0, requests=0, decisions=0)
    wanted = sorted(set(keys))
    usd, rows, requests = 0.0, 0, 0
    answered: set[str] = set()
    with Journal(journal_path, create=False) as journal:
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found = journal.query(
                f"SELECT key, cost_usd, attempts, error_kind FROM decisions "
                f"WHERE backend = ? AND model = ? AND key IN ({marks})",
                (backend, model, *chunk),
            )
            for key, cost, attempts, error in found:
                usd += float(cost)  # type: ignore[arg-type]
                requests += int(attempts)  # type: ignore[call-overload]
                rows += 1
                if error is None:
                    answered.add(str(key))
    return Bill(usd=usd, rows=rows, requests=requests, decisions=len(answered))
