"""The decision journal: one SQLite file that is the cache, the audit log and the replay source.

Design choices, and why:
- WAL mode with a busy timeout, so a backtest, a recorder and a live bot can share one file.
- A decision is unique per key (partial unique index over rows without an error); failed attempts
  are kept as extra rows for the audit trail but are never served as answers, so a transient error
  is retried next time instead of being cached forever.
- `PRAGMA application_id` marks the file as ours and `user_version` holds the schema version:
  a corrupt, foreign or newer file stops with a clear error instead of being written over; an
  older one is migrated forward in one transaction (v1 -> v2 adds `attempts`).
- Spending limits are computed from the rows themselves (`spend_since`, `recent_calls`): every
  answer is committed as it arrives, so a crash or restart can neither forget nor double a cost.
- No secret ever reaches this module: rows hold requests, answers and usage only.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from llm_oracle.models import JournalEntry, OracleDecision

SCHEMA_VERSION = 2
APPLICATION_ID = 0x4C4C4F52  # "LLOR": identifies an llm_oracle journal
_LOOKUP_CHUNK = 500  # stays under SQLite's bound-parameter limit on every build

_SCHEMA = """
CREATE TABLE decisions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key             TEXT    NOT NULL,
    purpose         TEXT    NOT NULL,
    backend         TEXT    NOT NULL,
    model           TEXT    NOT NULL,
    prompt_version  TEXT    NOT NULL,
    request_json    TEXT    NOT NULL,
    decision_json   TEXT,
    raw_response    TEXT,
    prompt_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    thinking_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens   INTEGER NOT NULL DEFAULT 0,
    latency_ms      REAL    NOT NULL DEFAULT 0,
    cost_usd        REAL    NOT NULL DEFAULT 0,
    model_version   TEXT,
    error_kind      TEXT,
    error_detail    TEXT,
    created_at      TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 1,
    CHECK ((decision_json IS NULL) <> (error_kind IS NULL))
);
CREATE UNIQUE INDEX decisions_answer_by_key ON decisions(key) WHERE error_kind IS NULL;
CREATE INDEX decisions_by_key ON decisions(key);
CREATE INDEX decisions_by_created ON decisions(created_at);
"""

# Each step takes a journal from version N-1 to N; applied in order inside one transaction.
# v1 rows predate retries and local refusals: each was exactly one request, hence DEFAULT 1.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE decisions ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1",),
}

_COLUMNS = (
    "key, purpose, backend, model, prompt_version, request_json, decision_json, raw_response, "
    "prompt_tokens, output_tokens, thinking_tokens, cached_tokens, latency_ms, cost_usd, "
    "model_version, error_kind, error_detail, created_at, attempts"
)
_PLACEHOLDERS = ", ".join(f":{c.strip()}" for c in _COLUMNS.split(","))


class JournalError(RuntimeError):
    """The journal file cannot be used; the message says why and what to do."""


class Journal:
    """Thread-safe access to one journal file. Open it once per process and share it."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise JournalError(f"journal {self.path} does not exist")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA busy_timeout = 30000")
            self._prepare()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise JournalError(
                f"{self.path} is not a usable SQLite journal ({exc}). It is corrupt or not a "
                "database; nothing was changed. Move it aside and start a new journal, or point "
                "llm_oracle.journal_path elsewhere."
            ) from exc

    def _prepare(self) -> None:
        conn = self._conn
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id == 0 and not tables:
            self._create_schema()
        elif app_id != APPLICATION_ID:
            raise JournalError(
                f"{self.path} is a SQLite database but not an llm_oracle journal "
                f"(application_id={app_id:#x}, tables: {', '.join(sorted(tables)) or 'none'}). "
                "Refusing to write into it; point llm_oracle.journal_path at another file."
            )
        elif version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path} has journal schema {version}, newer than this llm_oracle "
                f"understands ({SCHEMA_VERSION}). Upgrade the package; the file was not touched."
            )
        elif version < SCHEMA_VERSION:
            self._migrate()
        # WAL lets readers run beside one writer; NORMAL is durable against process crashes.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")

    def _create_schema(self) -> None:
        with self._transaction() as conn:
            # Re-check inside the write lock: another process may have created it meanwhile.
            if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
                return
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _migrate(self) -> None:
        with self._transaction() as conn:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def record(self, entry: JournalEntry) -> bool:
        """Store an entry. Returns False when an answer for the key was already there."""
        return self.record_many([entry]) == 1

    def record_many(self, entries: Iterable[JournalEntry]) -> int:
        """Store entries in one transaction; returns how many rows were new."""
        rows = [e.as_row() for e in entries]
        if not rows:
            return 0
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                f"INSERT OR IGNORE INTO decisions ({_COLUMNS}) VALUES ({_PLACEHOLDERS})", rows
            )
            return conn.total_changes - before

    def lookup(self, keys: Iterable[str]) -> dict[str, OracleDecision]:
        """Answers for the keys that have one, in one query per chunk (the replay hot path)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, OracleDecision] = {}
        with self._lock:
            for start in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, decision_json FROM decisions "
                    f"WHERE error_kind IS NULL AND key IN ({marks})",
                    chunk,
                ).fetchall()
                for key, decision_json in rows:
                    found[key] = OracleDecision.model_validate_json(decision_json)
        return found

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Read-only access for reports (stats); callers pass a SELECT."""
        if not sql.lstrip().upper().startswith("SELECT"):
            raise ValueError("Journal.query only runs SELECT statements")
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def spend_since(self, backend: str, since: datetime) -> tuple[int, int, float]:
        """Requests, tokens and USD that `backend` rows created at or after `since` account for."""
        row = self.query(
            "SELECT COALESCE(SUM(attempts), 0), "
            "COALESCE(SUM(prompt_tokens + output_tokens + thinking_tokens), 0), "
            "COALESCE(SUM(cost_usd), 0) FROM decisions WHERE backend = ? AND created_at >= ?",
            (backend, since.astimezone(UTC).isoformat()),
        )[0]
        return int(row[0]), int(row[1]), float(row[2])  # type: ignore[arg-type]

    def recent_calls(self, backend: str, limit: int) -> list[tuple[bool, datetime]]:
        """(succeeded, created_at) of the newest rows that reached the provider, newest first."""
        rows = self.query(
            "SELECT error_kind IS NULL, created_at FROM decisions "
            "WHERE backend = ? AND attempts > 0 ORDER BY id DESC LIMIT ?",
            (backend, limit),
        )
        return [(bool(ok), datetime.fromisoformat(str(at))) for ok, at in rows]

    def count(self, *, errors: bool = False) -> int:
        where = "error_kind IS NOT NULL" if errors else "error_kind IS NULL"
        return int(self.query(f"SELECT COUNT(*) FROM decisions WHERE {where}")[0][0])

    def close(self) -> None:
        with self._lock:
            self._close_quietly()

    def _close_quietly(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
            self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
