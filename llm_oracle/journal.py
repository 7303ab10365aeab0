"""The decision journal: one SQLite file that is the cache, the audit log and the replay source.

Design choices, and why:
- WAL mode with a busy timeout, so a backtest, a recorder and a live bot can share one file.
  Reads and writes use separate connections: a write waiting for another process's lock never
  holds up a lookup (WAL readers do not wait for writers).
- A decision is unique per key (partial unique index over rows without an error); failed attempts
  are kept as extra rows for the audit trail but are never served as answers, so a transient error
  is retried next time instead of being cached forever. A stored answer that no longer validates
  is a miss, never a crash; a fresh answer for its key supersedes it (the old row is kept, marked
  `unreadable`).
- `PRAGMA application_id` marks the file as ours and `user_version` holds the schema version:
  a corrupt, foreign or newer file stops with a clear error instead of being written over; an
  older one is migrated forward in one transaction. `PRAGMA quick_check` at open finds a file
  corrupted in the middle before a lookup trips over it.
- Every failure says what it is (`JournalProblem`: corrupt, locked, permission, disk full, ...)
  with advice that fits: a locked or full journal is fine and must not be moved aside.
- Spending limits are computed from the rows themselves (`spend_since`, `recent_calls`): every
  answer is committed as it arrives, so a crash or restart can neither forget nor double a cost.
- One budget for every process on the file: a request is reserved (`reserve`) in a BEGIN
  IMMEDIATE transaction that sums the day's rows and everybody's open reservations, so the
  daily caps hold across processes. Recording the answer deletes its reservation in the same
  transaction; an answer that lost a race to another process (its key already answered) keeps
  its reservation row as `unrecorded`, with its cost: every request sent stays accounted for.
  A reservation whose process died stays `open` and counts as a request that may have been
  sent (a budget is never understated). An open reservation counts with its estimated tokens and
  USD (so the token and USD caps hold across processes too) and says until when its owner
  (host:pid:process start) asks it, so no reader judges that by its own timeout.
- No secret ever reaches this module: rows hold requests, answers and usage only (scrubbed).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from pydantic import ValidationError

from llm_oracle.models import (
    CONTENT_ERROR_KINDS,
    ErrorKind,
    JournalEntry,
    OracleDecision,
    Usage,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 6
APPLICATION_ID = 0x4C4C4F52  # "LLOR": identifies an llm_oracle journal
_LOOKUP_CHUNK = 500  # stays under SQLite's bound-parameter limit on every build
BUSY_TIMEOUT_S = 10.0  # a write waits this long for another process; ours take ~1 ms
# A reservation row without `expires_at` (written before schema 6) counts as asked this long.
_LEGACY_RESERVATION_S = 60.0
# Reservation rows older than this are deleted (they only ever count for their own UTC day).
_RESERVATION_KEEP = timedelta(days=3)

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
    settings        TEXT    NOT NULL DEFAULT '',
    CHECK ((decision_json IS NULL) <> (error_kind IS NULL))
);
CREATE UNIQUE INDEX decisions_answer_by_key ON decisions(key) WHERE error_kind IS NULL;
CREATE INDEX decisions_by_key ON decisions(key);
CREATE INDEX decisions_by_created ON decisions(created_at);
{reservations}"""

_RESERVATIONS = """
CREATE TABLE reservations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    backend     TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    created_at  TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'open',
    calls       INTEGER NOT NULL DEFAULT 1,
    tokens      INTEGER NOT NULL DEFAULT 0,
    cost_usd    REAL    NOT NULL DEFAULT 0,
    key         TEXT
);
CREATE INDEX reservations_by_created ON reservations(created_at);
"""
_BATCHES = """
CREATE TABLE batch_jobs (
    name        TEXT    PRIMARY KEY,
    backend     TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    finished_at TEXT
);
CREATE TABLE batch_requests (
    job          TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_json TEXT    NOT NULL,
    reservation  INTEGER,
    PRIMARY KEY (job, key)
);
"""
_SCHEMA = _SCHEMA.replace("{reservations}", _RESERVATIONS + _BATCHES)
# v6: a reservation says until when its owner asks (its own deadline, refreshed by each retry)
# and who the owner is (host:pid:process start), so a reader never judges that by its own
# timeout and a reused pid is not taken for the owner; each decision row names the run that
# wrote it (`record` counts its own rows only).
_V6 = (
    "ALTER TABLE reservations ADD COLUMN expires_at TEXT",
    "ALTER TABLE reservations ADD COLUMN owner TEXT",
    "ALTER TABLE decisions ADD COLUMN run TEXT",
)

# Each step takes a journal from version N-1 to N; applied in order inside one transaction.
# v1 rows predate retries and local refusals: each was exactly one request, hence DEFAULT 1.
# v3 records the backend settings in the decision key (the audit trail of what was asked how).
# v4 adds the reservations shared by every process on the file (one daily budget).
# v5 adds Gemini batch jobs and their requests, so a batch recording resumes after a restart.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE decisions ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1",),
    3: ("ALTER TABLE decisions ADD COLUMN settings TEXT NOT NULL DEFAULT ''",),
    4: tuple(filter(str.strip, _RESERVATIONS.split(";"))),
    5: tuple(filter(str.strip, _BATCHES.split(";"))),
    6: _V6,
}

_COLUMNS = (
    "key, purpose, backend, model, prompt_version, request_json, decision_json, raw_response, "
    "prompt_tokens, output_tokens, thinking_tokens, cached_tokens, latency_ms, cost_usd, "
    "model_version, error_kind, error_detail, created_at, attempts, settings"
)
_PLACEHOLDERS = ", ".join(f":{c.strip()}" for c in _COLUMNS.split(","))


class JournalProblem(StrEnum):
    CORRUPT = "corrupt"
    NOT_A_JOURNAL = "not_a_journal"
    NEWER = "newer_schema"
    MISSING = "missing"
    NOT_A_FILE = "not_a_file"
    LOCKED = "locked"
    PERMISSION = "permission"
    DISK_FULL = "disk_full"
    IO = "io_error"


class JournalError(RuntimeError):
    """The journal file cannot be used; the message says why and what to do."""

    def __init__(self, message: str, problem: JournalProblem = JournalProblem.IO) -> None:
        super().__init__(message)
        self.problem = problem


# SQLite primary result codes (sqlite3.Error.sqlite_errorcode & 0xFF).
_SQLITE_PROBLEMS = {
    3: JournalProblem.PERMISSION,  # SQLITE_PERM
    5: JournalProblem.LOCKED,  # SQLITE_BUSY
    6: JournalProblem.LOCKED,  # SQLITE_LOCKED
    8: JournalProblem.PERMISSION,  # SQLITE_READONLY
    10: JournalProblem.IO,  # SQLITE_IOERR
    11: JournalProblem.CORRUPT,  # SQLITE_CORRUPT
    13: JournalProblem.DISK_FULL,  # SQLITE_FULL
    14: JournalProblem.PERMISSION,  # SQLITE_CANTOPEN (refined from the path below)
    23: JournalProblem.PERMISSION,  # SQLITE_AUTH
    26: JournalProblem.CORRUPT,  # SQLITE_NOTADB
}
_OS_PROBLEMS = {
    errno.EACCES: JournalProblem.PERMISSION,
    errno.EPERM: JournalProblem.PERMISSION,
    errno.EROFS: JournalProblem.PERMISSION,
    errno.ENOSPC: JournalProblem.DISK_FULL,
    errno.EDQUOT: JournalProblem.DISK_FULL,
    errno.EISDIR: JournalProblem.NOT_A_FILE,
    errno.ENOTDIR: JournalProblem.NOT_A_FILE,
}


def classify(exc: BaseException) -> JournalProblem:
    """What a sqlite3 or OS error means for the journal file."""
    if isinstance(exc, JournalError):
        return exc.problem
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and (code & 0xFF) in _SQLITE_PROBLEMS:
            return _SQLITE_PROBLEMS[code & 0xFF]
        text = str(exc).lower()
        for fragment, problem in (
            ("locked", JournalProblem.LOCKED),
            ("readonly", JournalProblem.PERMISSION),
            ("disk is full", JournalProblem.DISK_FULL),
            ("malformed", JournalProblem.CORRUPT),
            ("not a database", JournalProblem.CORRUPT),
        ):
            if fragment in text:
                return problem
        return JournalProblem.IO
    if isinstance(exc, OSError) and exc.errno in _OS_PROBLEMS:
        return _OS_PROBLEMS[exc.errno]
    return JournalProblem.IO


def advice(problem: JournalProblem, path: Path, detail: str, *, busy_s: float = 0.0) -> str:
    """One message per problem: what it is, whether the file is fine, and what to do."""
    where = path.parent
    if problem is JournalProblem.CORRUPT:
        return (
            f"{path} is not a usable SQLite journal: it is corrupt or not a database ({detail}). "
            f"Nothing was changed. Keep it for recovery (sqlite3 {path} .recover > rescued.sql), "
            "move it aside or restore a backup, or point llm_oracle.journal_path elsewhere; a new "
            "journal starts empty."
        )
    if problem is JournalProblem.LOCKED:
        return (
            f"{path} is locked by another process ({detail}; waited {busy_s:g} s). The file is "
            "fine, do not move it aside: stop or wait for the other writer (another bot or "
            "recorder on the same journal, or an sqlite3 shell holding a transaction)."
        )
    if problem is JournalProblem.PERMISSION:
        return (
            f"{path} cannot be written ({detail}). The file is fine: make it and its directory "
            f"{where} readable and writable for this user (SQLite also writes {path.name}-wal "
            f"and {path.name}-shm beside it), or remount the filesystem read-write."
        )
    if problem is JournalProblem.DISK_FULL:
        return (
            f"{path}: the disk is full ({detail}). The journal is fine: free space on the disk "
            f"that holds {where}."
        )
    if problem is JournalProblem.NOT_A_FILE:
        example = f", for example {path / 'journal.sqlite'}" if path.is_dir() else ""
        return (
            f"{path} cannot be a journal file ({detail}): point llm_oracle.journal_path at a "
            f"file in a directory{example}."
        )
    if problem is JournalProblem.MISSING:
        return f"journal {path} does not exist"
    return f"{path}: I/O error ({detail}). Check the disk and the filesystem it is on."


class ReservationState(StrEnum):
    OPEN = "open"  # reserved, the request may be in flight (or its process died with it)
    UNRECORDED = "unrecorded"  # answered and paid, but another process had answered first


@dataclass(frozen=True, slots=True)
class Caps:
    """Daily caps a reservation is checked against (None = no cap)."""

    calls: int | None = None
    tokens: int | None = None
    usd: float | None = None


@dataclass(frozen=True, slots=True)
class Reserved:
    """What `reserve` found: the reservation id (None = refused) and the day's spend before it."""

    id: int | None
    calls: int
    tokens: int
    usd: float
    exhausted: str | None = None
    # Not reserved because another process is asking the same question (its reservation id),
    # or has answered it already (`answered`): wait for that answer instead of paying again.
    asked_by: int | None = None
    answered: bool = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _process_start(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat (start time, clock ticks after boot): with the pid it
    names one process, never a later one that got the same pid. "" where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # fields after "(comm)" start at field 3


_OWNER: tuple[int, str] | None = None


def owner_id() -> str:
    """This process as a reservation's owner: host:pid:start (recomputed after a fork)."""
    global _OWNER
    pid = os.getpid()
    if _OWNER is None or _OWNER[0] != pid:
        _OWNER = (pid, f"{socket.gethostname()}:{pid}:{_process_start(pid)}")
    return _OWNER[1]


def owner_alive(owner: str | None, pid: int) -> bool:
    """Is the process that owns a reservation still running? Another host's process cannot be
    checked from here: alive (its `expires_at` bounds the wait)."""
    if not owner:
        return _alive(pid)
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return True
    if not pid_text.isdigit() or not _alive(int(pid_text)):
        return False
    return not start or _process_start(int(pid_text)) in ("", start)


@dataclass(slots=True)
class Lookup:
    """What the journal knows about a batch of keys."""

    answers: dict[str, OracleDecision] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)  # an answer row that no longer validates
    invalid_answers: dict[str, int] = field(default_factory=dict)  # content errors per key


class Journal:
    """Thread-safe access to one journal file. Open it once per process and share it."""

    def __init__(
        self,
        path: Path,
        *,
        create: bool = True,
        migrate: bool = True,
        check: bool = True,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()  # the read connection
        self._write_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._write_conn: sqlite3.Connection | None = None
        # Reservations have a connection of their own, with a short busy timeout per call: a
        # live decision must not wait behind this process's own slow write or another's lock.
        self._budget_lock = threading.Lock()
        self._budget_conn: sqlite3.Connection | None = None
        self._closed = False
        # Written into each decision row's `run` (e.g. by `record`, to count its own rows).
        self.run: str | None = None
        try:
            self._open(create=create, migrate=migrate, check=check)
        except JournalError:
            self._close_quietly()
            raise
        except (sqlite3.Error, OSError) as exc:
            self._close_quietly()
            problem = classify(exc)
            if problem is JournalProblem.PERMISSION and self.path.is_dir():
                problem = JournalProblem.NOT_A_FILE
            raise JournalError(
                advice(problem, self.path, str(exc), busy_s=busy_timeout_s), problem
            ) from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        return conn

    def _open(self, *, create: bool, migrate: bool, check: bool) -> None:
        if self.path.is_dir():
            raise JournalError(
                advice(JournalProblem.NOT_A_FILE, self.path, "it is a directory"),
                JournalProblem.NOT_A_FILE,
            )
        if not self.path.exists():
            if not create:
                raise JournalError(
                    advice(JournalProblem.MISSING, self.path, ""), JournalProblem.MISSING
                )
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as exc:
                raise JournalError(
                    advice(JournalProblem.NOT_A_FILE, self.path, f"a parent is a file: {exc}"),
                    JournalProblem.NOT_A_FILE,
                ) from exc
        elif not os.access(self.path, os.R_OK | os.W_OK):
            # SQLite silently opens an unwritable file read-only; the first write would then
            # fail in a callback. Refuse it here (check_journal relies on this too).
            raise JournalError(
                advice(JournalProblem.PERMISSION, self.path, "no read/write permission"),
                JournalProblem.PERMISSION,
            )
        self._conn = self._connect()
        self._write_conn = self._connect()
        self._prepare(migrate=migrate)
        if check:
            self._quick_check()

    def _prepare(self, *, migrate: bool) -> None:
        conn = self._conn
        assert conn is not None
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id == 0 and not tables:
            self._create_schema()
        elif app_id != APPLICATION_ID:
            raise JournalError(
                f"{self.path} is a SQLite database but not an llm_oracle journal "
                f"(application_id={app_id:#x}, tables: {', '.join(sorted(tables)) or 'none'}). "
                "Refusing to write into it; point llm_oracle.journal_path at another file.",
                JournalProblem.NOT_A_JOURNAL,
            )
        elif version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path} has journal schema {version}, newer than this llm_oracle "
                f"understands ({SCHEMA_VERSION}). Upgrade the package; the file was not touched.",
                JournalProblem.NEWER,
            )
        elif version < SCHEMA_VERSION and migrate:
            self._migrate()
        # WAL lets readers run beside one writer; NORMAL is durable against process crashes.
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self._write_conn.execute("PRAGMA journal_mode = WAL")  # type: ignore[union-attr]
        for c in (self._conn, self._write_conn):
            c.execute("PRAGMA synchronous = NORMAL")  # type: ignore[union-attr]

    def _quick_check(self) -> None:
        """A file corrupted in the middle fails here, with advice, not in a later lookup."""
        with self._lock:
            rows = self._read().execute("PRAGMA quick_check(5)").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            detail = "; ".join(str(r[0]) for r in rows)
            raise JournalError(
                advice(JournalProblem.CORRUPT, self.path, f"integrity check: {detail}"),
                JournalProblem.CORRUPT,
            )

    def _create_schema(self) -> None:
        with self._transaction() as conn:
            # Re-check inside the write lock: another process may have created it meanwhile.
            if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
                return
            for statement in (*filter(str.strip, _SCHEMA.split(";")), *_V6):
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

    def _read(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path} is closed", JournalProblem.IO)
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            conn = self._write_conn
            if conn is None:
                raise JournalError(f"journal {self.path} is closed", JournalProblem.IO)
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _budget_transaction(self, busy_s: float | None) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE on the reservation connection, waiting at most `busy_s` (None: the
        journal's busy timeout) for this process's other reservations and other processes."""
        wait = self.busy_timeout_s if busy_s is None else max(0.0, busy_s)
        if not self._budget_lock.acquire(timeout=wait):
            raise JournalError(
                advice(JournalProblem.LOCKED, self.path, "reserving: busy", busy_s=wait),
                JournalProblem.LOCKED,
            )
        try:
            if self._closed:
                raise JournalError(f"journal {self.path} is closed", JournalProblem.IO)
            if self._budget_conn is None:
                self._budget_conn = self._connect()
            conn = self._budget_conn
            conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            self._budget_lock.release()

    @contextmanager
    def _failures(self, doing: str) -> Iterator[None]:
        """sqlite3/OS errors as a JournalError that names the problem and gives advice."""
        try:
            yield
        except JournalError:
            raise
        except (sqlite3.Error, OSError) as exc:
            problem = classify(exc)
            detail = f"{doing}: {exc}"
            raise JournalError(
                advice(problem, self.path, detail, busy_s=self.busy_timeout_s), problem
            ) from exc

    # --- writing -----------------------------------------------------------------------------
    def record(self, entry: JournalEntry) -> bool:
        """Store an entry. Returns False when an answer for the key was already there."""
        return self.record_many([entry]) == 1

    def record_many(
        self,
        entries: Iterable[JournalEntry],
        supersede: Collection[str] = (),
        reservations: dict[str, int] | None = None,
    ) -> int:
        """Store entries in one transaction; returns how many rows were new.

        `supersede`: keys whose stored answer was found unreadable. Their old answer row is
        marked `unreadable` (its text kept in error_detail) so the new answer can take its place;
        a row that validates (another process may have written it meanwhile) is left alone.
        `reservations`: key -> reservation id of the request that got the entry. A stored row
        takes over its reservation's accounting (the reservation is deleted); an answer that was
        already there (lost a race) leaves its reservation as `unrecorded`, with its cost.
        """
        items = list(entries)
        if not items:
            return 0
        reservations = reservations or {}
        with self._failures("writing"), self._transaction() as conn:
            for key in set(supersede) & {e.key for e in items}:
                self._demote_unreadable(conn, key)
            new = 0
            insert = f"INSERT OR IGNORE INTO decisions ({_COLUMNS}) VALUES ({_PLACEHOLDERS})"
            for entry in items:
                before = conn.total_changes
                cursor = conn.execute(insert, entry.as_row())
                stored = conn.total_changes - before
                new += stored
                if stored and self.run is not None:
                    conn.execute(
                        "UPDATE decisions SET run = ? WHERE id = ?", (self.run, cursor.lastrowid)
                    )
                reservation = reservations.get(entry.key)
                if reservation is None:
                    continue
                if stored:
                    conn.execute("DELETE FROM reservations WHERE id = ?", (reservation,))
                else:
                    usage = entry.usage
                    tokens = usage.prompt_tokens + usage.output_tokens + usage.thinking_tokens
                    conn.execute(
                        "UPDATE reservations SET state = ?, calls = ?, tokens = ?, cost_usd = ? "
                        "WHERE id = ?",
                        (
                            ReservationState.UNRECORDED.value,
                            entry.attempts,
                            tokens,
                            entry.cost_usd,
                            reservation,
                        ),
                    )
            return new

    # --- one budget for every process -------------------------------------------------------
    _SPENT_SQL = (
        "SELECT COALESCE(SUM(attempts), 0), "
        "COALESCE(SUM(prompt_tokens + output_tokens + thinking_tokens), 0), "
        "COALESCE(SUM(cost_usd), 0) FROM decisions WHERE backend = ? AND created_at >= ?"
    )
    _RESERVED_SQL = (
        "SELECT COALESCE(SUM(calls), 0), COALESCE(SUM(tokens), 0), COALESCE(SUM(cost_usd), 0) "
        "FROM reservations WHERE backend = ? AND created_at >= ?"
    )

    @classmethod
    def _spent(cls, conn: sqlite3.Connection, backend: str, since: str) -> tuple[int, int, float]:
        a = conn.execute(cls._SPENT_SQL, (backend, since)).fetchone()
        b = conn.execute(cls._RESERVED_SQL, (backend, since)).fetchone()
        return int(a[0]) + int(b[0]), int(a[1]) + int(b[1]), float(a[2]) + float(b[2])

    def reserve(
        self,
        backend: str,
        since: datetime,
        caps: Caps,
        *,
        key: str | None = None,
        extend: int | None = None,
        expires_s: float = 60.0,
        estimate: tuple[int, float] = (0, 0.0),
        dedupe: bool = True,
        busy_s: float | None = None,
    ) -> Reserved:
        """Reserve one request against the day's caps, for every process on this journal.

        The day's spend (rows since `since` plus every reservation, open or unrecorded) and the
        reservation are read and written in one BEGIN IMMEDIATE transaction, so two processes
        cannot both take the last request. An open reservation counts with `estimate` (tokens,
        USD) until its row replaces it with what the answer cost: the token and USD caps hold
        across processes too, overshot by at most one request's error of estimate.
        `extend`: add the request to that reservation (a retry) instead of opening a new one.
        `expires_s`: how long from now this process asks (its own deadline; a retry refreshes
        it). With `key`, a question another live process is asking (an open reservation not
        expired) or has answered is not reserved. `busy_s`: the longest wait for the lock
        (a JournalError LOCKED after it).
        """
        stamp = since.astimezone(UTC).isoformat()
        now = datetime.now(UTC)
        expires = (now + timedelta(seconds=expires_s)).isoformat()
        est_tokens, est_usd = max(0, int(estimate[0])), max(0.0, float(estimate[1]))
        with self._failures("reserving"), self._budget_transaction(busy_s) as conn:
            if key is not None and extend is None and dedupe:
                answered = conn.execute(
                    "SELECT 1 FROM decisions WHERE key = ? AND error_kind IS NULL", (key,)
                ).fetchone()
                if answered is not None:
                    return Reserved(None, 0, 0, 0.0, answered=True)
                other = self._asker(conn, key, now)
                if other is not None:
                    return Reserved(None, 0, 0, 0.0, asked_by=other)
            calls, tokens, usd = self._spent(conn, backend, stamp)
            exhausted = None
            if caps.calls is not None and calls >= caps.calls:
                exhausted = f"requests {calls}/{caps.calls}"
            elif caps.tokens is not None and tokens >= caps.tokens:
                exhausted = f"tokens {tokens}/{caps.tokens}"
            elif caps.usd is not None and usd >= caps.usd:
                exhausted = f"USD {usd:.4f}/{caps.usd:.2f}"
            if exhausted is not None:
                return Reserved(None, calls, tokens, usd, exhausted)
            if extend is not None:
                conn.execute(
                    "UPDATE reservations SET calls = calls + 1, tokens = tokens + ?, "
                    "cost_usd = cost_usd + ?, expires_at = ? WHERE id = ?",
                    (est_tokens, est_usd, expires, extend),
                )
                return Reserved(extend, calls, tokens, usd)
            # Past days' rows never count again: keep the table small.
            conn.execute(
                "DELETE FROM reservations WHERE created_at < ?",
                ((since - _RESERVATION_KEEP).astimezone(UTC).isoformat(),),
            )
            cursor = conn.execute(
                "INSERT INTO reservations (backend, pid, created_at, key, tokens, cost_usd, "
                "expires_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    backend,
                    os.getpid(),
                    now.isoformat(),
                    key,
                    est_tokens,
                    est_usd,
                    expires,
                    owner_id(),
                ),
            )
            return Reserved(cursor.lastrowid, calls, tokens, usd)

    @staticmethod
    def _asker(conn: sqlite3.Connection, key: str, now: datetime) -> int | None:
        """The open, unexpired reservation of another live process asking `key`."""
        legacy = (now - timedelta(seconds=_LEGACY_RESERVATION_S)).isoformat()
        mine = owner_id()
        rows = conn.execute(
            "SELECT id, pid, owner FROM reservations WHERE key = ? AND state = ? AND "
            "(expires_at >= ? OR (expires_at IS NULL AND created_at >= ?)) "
            "AND COALESCE(owner, '') != ?",
            (key, ReservationState.OPEN.value, now.isoformat(), legacy, mine),
        ).fetchall()
        for other, pid, owner in rows:
            if int(pid) == os.getpid() and owner is None:
                continue  # a pre-v6 row of this very process
            if owner_alive(owner, int(pid)):
                return int(other)
        return None

    def release(self, reservation: int, sent: int = 0, busy_s: float | None = None) -> None:
        """A reservation whose requests were not all sent: keep `sent` of them (0 deletes it)."""
        with self._failures("releasing"), self._budget_transaction(busy_s) as conn:
            if sent <= 0:
                conn.execute("DELETE FROM reservations WHERE id = ?", (reservation,))
            else:
                conn.execute("UPDATE reservations SET calls = ? WHERE id = ?", (sent, reservation))

    def reservation_open(self, reservation: int) -> bool:
        """Is that reservation still waiting for its answer (not expired, its owner alive)?"""
        now = datetime.now(UTC)
        legacy = (now - timedelta(seconds=_LEGACY_RESERVATION_S)).isoformat()
        rows = self.query(
            "SELECT pid, owner FROM reservations WHERE id = ? AND state = ? AND "
            "(expires_at >= ? OR (expires_at IS NULL AND created_at >= ?))",
            (reservation, ReservationState.OPEN.value, now.isoformat(), legacy),
        )
        return bool(rows) and owner_alive(rows[0][1], int(rows[0][0]))  # type: ignore[arg-type,call-overload]

    # --- batch jobs (Gemini Batch API), resumable --------------------------------------------
    def add_batch_job(
        self,
        name: str,
        backend: str,
        model: str,
        requests: list[tuple[str, str, int | None]],
        state: str = "submitted",
    ) -> None:
        """A job and its (key, request JSON, reservation) list, in one transaction. Journaled
        as `creating` under its unique display name before it is created (`created` renames
        it): a process that dies in between leaves the intent, found again by that name."""
        with self._failures("writing"), self._transaction() as conn:
            conn.execute(
                "INSERT INTO batch_jobs (name, backend, model, created_at, state) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, backend, model, datetime.now(UTC).isoformat(), state),
            )
            conn.executemany(
                "INSERT INTO batch_requests (job, key, request_json, reservation) "
                "VALUES (?, ?, ?, ?)",
                [(name, k, r, res) for k, r, res in requests],
            )

    def batch_job_created(self, intent: str, name: str) -> None:
        """The job of intent `intent` exists at the provider as `name`."""
        with self._failures("writing"), self._transaction() as conn:
            conn.execute(
                "UPDATE batch_jobs SET name = ?, state = 'submitted' WHERE name = ?", (name, intent)
            )
            conn.execute("UPDATE batch_requests SET job = ? WHERE job = ?", (name, intent))

    def drop_batch_job(self, name: str) -> None:
        """A job intent that never became a job: forget it and give its reservations back."""
        with self._failures("writing"), self._transaction() as conn:
            conn.execute(
                "DELETE FROM reservations WHERE id IN (SELECT reservation FROM batch_requests "
                "WHERE job = ? AND reservation IS NOT NULL)",
                (name,),
            )
            conn.execute("DELETE FROM batch_requests WHERE job = ?", (name,))
            conn.execute("DELETE FROM batch_jobs WHERE name = ?", (name,))

    def batch_job_state(self, name: str) -> str | None:
        rows = self.query("SELECT state FROM batch_jobs WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def reservation_day(self, reservation: int) -> datetime | None:
        """The UTC time a reservation was made (its day is the day it is charged to)."""
        rows = self.query("SELECT created_at FROM reservations WHERE id = ?", (reservation,))
        return datetime.fromisoformat(str(rows[0][0])) if rows else None

    def open_batch_jobs(self, backend: str, model: str) -> list[str]:
        rows = self.query(
            "SELECT name FROM batch_jobs WHERE backend = ? AND model = ? AND finished_at IS NULL "
            "ORDER BY created_at",
            (backend, model),
        )
        return [str(r[0]) for r in rows]

    def batch_requests(self, job: str) -> list[tuple[str, str, int | None]]:
        rows = self.query(
            "SELECT key, request_json, reservation FROM batch_requests WHERE job = ?", (job,)
        )
        return [(str(k), str(r), None if res is None else int(res)) for k, r, res in rows]  # type: ignore[call-overload]

    def finish_batch_job(self, name: str, state: str) -> None:
        with self._failures("writing"), self._transaction() as conn:
            conn.execute(
                "UPDATE batch_jobs SET state = ?, finished_at = ? WHERE name = ?",
                (state, datetime.now(UTC).isoformat(), name),
            )

    def reservations(self, backend: str | None = None) -> list[tuple[str, str, int, int, float]]:
        """(backend, state, rows, calls, USD) of every reservation left, grouped."""
        where, params = ("WHERE backend = ?", (backend,)) if backend else ("", ())
        rows = self.query(
            "SELECT backend, state, COUNT(*), COALESCE(SUM(calls), 0), COALESCE(SUM(cost_usd), 0) "
            f"FROM reservations {where} GROUP BY backend, state ORDER BY backend, state",
            params,
        )
        return [(str(b), str(s), int(n), int(c), float(u)) for b, s, n, c, u in rows]  # type: ignore[call-overload]

    @staticmethod
    def _demote_unreadable(conn: sqlite3.Connection, key: str) -> None:
        found = conn.execute(
            "SELECT id, decision_json FROM decisions WHERE key = ? AND error_kind IS NULL", (key,)
        ).fetchone()
        if found is None or _decision_or_none(found[1]) is not None:
            return
        conn.execute(
            "UPDATE decisions SET error_kind = ?, decision_json = NULL, "
            "error_detail = 'unreadable answer, superseded: ' || substr(decision_json, 1, 2000) "
            "WHERE id = ?",
            (ErrorKind.UNREADABLE.value, found[0]),
        )

    # --- reading -----------------------------------------------------------------------------
    def lookup(self, keys: Iterable[str]) -> dict[str, OracleDecision]:
        """Answers for the keys that have a readable one (the replay hot path)."""
        return self.lookup_detailed(keys).answers

    def lookup_detailed(self, keys: Iterable[str], *, count_invalid: bool = False) -> Lookup:
        """Answers in one query per chunk; for the rest, optionally how many unusable answers
        each key got (content errors), which decides when a question is unanswerable."""
        wanted = list(dict.fromkeys(keys))
        result = Lookup()
        with self._failures("reading"), self._lock:
            conn = self._read()
            for start in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, decision_json FROM decisions "
                    f"WHERE error_kind IS NULL AND key IN ({marks})",
                    chunk,
                ).fetchall()
                for key, decision_json in rows:
                    decision = _decision_or_none(decision_json)
                    if decision is None:
                        result.unreadable.add(key)
                    else:
                        result.answers[key] = decision
            if count_invalid:
                rest = [k for k in wanted if k not in result.answers]
                kinds = ",".join("?" * len(CONTENT_ERROR_KINDS))
                for start in range(0, len(rest), _LOOKUP_CHUNK):
                    chunk = rest[start : start + _LOOKUP_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    counts = conn.execute(
                        f"SELECT key, COUNT(*) FROM decisions WHERE key IN ({marks}) "
                        f"AND error_kind IN ({kinds}) GROUP BY key",
                        (*chunk, *CONTENT_ERROR_KINDS),
                    ).fetchall()
                    result.invalid_answers.update((str(k), int(n)) for k, n in counts)
        if result.unreadable:
            logger.warning(
                "journal %s: %d stored answer(s) no longer validate; treated as misses",
                self.path,
                len(result.unreadable),
            )
        return result

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Read-only access for reports (stats); callers pass a SELECT."""
        if not sql.lstrip().upper().startswith("SELECT"):
            raise ValueError("Journal.query only runs SELECT statements")
        with self._failures("reading"), self._lock:
            return self._read().execute(sql, params).fetchall()

    def spend_since(self, backend: str, since: datetime) -> tuple[int, int, float]:
        """Requests, tokens and USD that `backend` rows and reservations (of any process)
        created at or after `since` account for."""
        with self._failures("reading"), self._lock:
            return self._spent(self._read(), backend, since.astimezone(UTC).isoformat())

    def recent_calls(self, backend: str, limit: int) -> list[tuple[bool, datetime]]:
        """(provider healthy, created_at) of the newest rows that reached it, newest first.

        An unusable answer (content error) still means the provider answered: healthy.
        """
        kinds = ",".join("?" * len(CONTENT_ERROR_KINDS))
        rows = self.query(
            f"SELECT error_kind IS NULL OR error_kind IN ({kinds}), created_at FROM decisions "
            "WHERE backend = ? AND attempts > 0 ORDER BY id DESC LIMIT ?",
            (*CONTENT_ERROR_KINDS, backend, limit),
        )
        return [(bool(ok), datetime.fromisoformat(str(at))) for ok, at in rows]

    def mean_usage(self, backend: str, model: str, rows: int = 200) -> Usage | None:
        """Mean usage of one response among the newest answers of that backend and model."""
        found = self.query(
            "SELECT COUNT(*), AVG(prompt_tokens), AVG(output_tokens), AVG(thinking_tokens), "
            "AVG(cached_tokens) FROM (SELECT * FROM decisions WHERE backend = ? AND model = ? "
            "AND error_kind IS NULL AND attempts > 0 ORDER BY id DESC LIMIT ?)",
            (backend, model, rows),
        )[0]
        if not found[0]:
            return None
        prompt, output, thinking, cached = (round(float(v)) for v in found[1:])  # type: ignore[arg-type]
        return Usage(
            prompt_tokens=prompt,
            output_tokens=output,
            thinking_tokens=thinking,
            cached_tokens=cached,
        )

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another process's lock (e.g. shorter at shutdown)."""
        self.busy_timeout_s = seconds
        with self._write_lock:
            if self._write_conn is not None:
                self._write_conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def schema_version(self) -> int:
        with self._failures("reading"), self._lock:
            return int(self._read().execute("PRAGMA user_version").fetchone()[0])

    def count(self, *, errors: bool = False) -> int:
        where = "error_kind IS NOT NULL" if errors else "error_kind IS NULL"
        return int(self.query(f"SELECT COUNT(*) FROM decisions WHERE {where}")[0][0])  # type: ignore[arg-type]

    # --- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._write_lock, self._lock, self._budget_lock:
            self._closed = True
            self._close_quietly()

    def _close_quietly(self) -> None:
        for name in ("_conn", "_write_conn", "_budget_conn"):
            conn = getattr(self, name, None)
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error:  # closing is best effort
                    logger.debug("closing the journal failed", exc_info=True)
                setattr(self, name, None)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decision_or_none(decision_json: object) -> OracleDecision | None:
    try:
        return OracleDecision.model_validate_json(str(decision_json))
    except ValidationError:
        return None


def check_journal(path: Path) -> str:
    """What startup would find at `path`, without creating, migrating or writing anything.

    Returns a one-line status; raises JournalError with the same message startup would give.
    """
    path = Path(path)
    if not path.exists():
        # Startup creates it: the nearest existing ancestor must be a writable directory.
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise JournalError(
                advice(JournalProblem.NOT_A_FILE, path, f"a parent is a file: {ancestor}"),
                JournalProblem.NOT_A_FILE,
            )
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise JournalError(
                advice(JournalProblem.PERMISSION, path, f"{ancestor} is not writable"),
                JournalProblem.PERMISSION,
            )
        return f"journal {path} does not exist yet; startup creates it"
    # The open refuses a directory or an unwritable file with the message startup gives.
    with Journal(path, create=False, migrate=False, busy_timeout_s=5.0) as journal:
        version = journal.schema_version()
        rows = journal.count() + journal.count(errors=True)
    migrate = ""
    if version < SCHEMA_VERSION:
        migrate = f", schema {version} (startup migrates it to {SCHEMA_VERSION})"
    return f"journal {path}: OK, {rows} rows{migrate}"
