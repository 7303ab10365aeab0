"""Injected journal faults while the oracle serves paid Gemini calls (fake endpoint on loopback).

Each fault: no crash, the answer serves the running candle, no leaked budget reservation, the
breaker is untouched (a journal failure is not a provider failure) and calls go on, the message
names the problem with the right advice, and nothing answered is lost once the journal works
again. Faults: a read-only journal, a second process holding the write lock, a corrupt row, a
corrupt page (at open and under a running bot), a full disk (SQLite's page limit, and a real
tiny filesystem where mounting one is permitted).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llm_oracle.config import load_config
from llm_oracle.journal import Journal, JournalError, JournalProblem
from llm_oracle.limits.breaker import BreakerState, CircuitBreaker
from llm_oracle.models import Action, DecisionSource, ErrorKind, OracleDecision
from llm_oracle.oracle import Oracle
from tests.fake_gemini import FakeGemini, ServerError
from tests.gemini_helpers import fake_gemini_env, gemini_config, requests_n

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    yield from fake_gemini_env(monkeypatch)


def oracle_on(journal: Journal, fake: FakeGemini) -> Oracle:
    limits = {"concurrency": 2, "budget": {"daily_calls": 100}}
    block = gemini_config(fake, gemini={"limits": limits})
    return Oracle(load_config(block), journal)


def assert_settled(oracle: Oracle, calls: int) -> None:
    """Every reservation released, every call booked, the breaker closed."""
    guard = oracle.guard
    assert guard is not None
    assert guard.budget._reserved == 0
    assert guard.budget.spent.calls == calls
    assert guard.breaker.state is BreakerState.CLOSED
    assert guard.breaker.consecutive_failures == 0


def ask(oracle: Oracle, request: Any) -> Any:
    [outcome] = oracle.decide_many([request])
    oracle.flush()
    return outcome


def the_event(oracle: Oracle, fragment: str) -> str:
    events = [e for e in oracle.drain_events() if fragment in e]
    assert len(events) == 1, events
    return events[0]


def write_fault_then_recovery(
    oracle: Oracle, fake: FakeGemini, inject: Any, heal: Any, problem: JournalProblem
) -> str:
    """One answer before, one during and one after the fault: the common script."""
    before, during, after = requests_n(3)
    assert ask(oracle, before).source is DecisionSource.BACKEND
    inject()
    outcome = ask(oracle, during)
    # The running candle gets the paid answer, not the fallback.
    assert outcome.source is DecisionSource.BACKEND and outcome.decision.action is Action.LONG
    message = the_event(oracle, "journal write failed")
    assert f"({problem.value})" in message and "not recorded" in message
    assert oracle.pending_writes == 1 and oracle.stats.journal_write_failures >= 1
    # The same question again in this process: from memory, not asked (and paid) twice.
    again = ask(oracle, during)
    assert again.decision == outcome.decision and fake.count == 2
    assert oracle.stats.memory_hits == 1
    assert_settled(oracle, calls=2)
    heal()
    assert ask(oracle, after).source is DecisionSource.BACKEND and fake.count == 3
    the_event(oracle, "journal writes work again")
    assert oracle.pending_writes == 0
    # Nothing answered was lost: the answer from the fault went in with the next write.
    keys = [oracle.key_for(r) for r in (before, during, after)]
    assert set(oracle.journal.lookup(keys)) == set(keys)
    assert_settled(oracle, calls=3)
    assert "journal failures: " in oracle.stats.summary()
    return message


# --- read-only ----------------------------------------------------------------------------------
def test_read_only_journal(tmp_path: Path, fake: FakeGemini) -> None:
    oracle = oracle_on(Journal(tmp_path / "j.sqlite"), fake)
    conn = oracle.journal._write_conn
    assert conn is not None
    message = write_fault_then_recovery(
        oracle,
        fake,
        lambda: conn.execute("PRAGMA query_only = 1"),  # SQLite's own read-only refusal
        lambda: conn.execute("PRAGMA query_only = 0"),
        JournalProblem.PERMISSION,
    )
    assert "readable and writable for this user" in message and "-wal" in message
    oracle.close()


def test_read_only_filesystem_at_open_says_permission(tmp_path: Path) -> None:
    with tiny_filesystem(tmp_path, 256) as fs:
        Journal(fs / "j.sqlite").close()
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        try:
            with pytest.raises(JournalError) as err:
                Journal(fs / "j.sqlite")
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True)
    assert err.value.problem is JournalProblem.PERMISSION
    assert "The file is fine" in str(err.value) and "corrupt" not in str(err.value)


# The open, in a process of its own that is not root: root ignores file permissions. The
# imports happen first (the interpreter may live where `nobody` cannot read), then it drops to
# `nobody`; as a non-root user it simply stays who it is.
_OPEN_UNPRIVILEGED = """
import os, sys
from llm_oracle.journal import Journal, JournalError
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(int(sys.argv[2]))
    os.setuid(int(sys.argv[2]))
assert os.geteuid() != 0
try:
    Journal(sys.argv[1]).close()
except JournalError as exc:
    print(exc.problem.value)
    print(exc)
else:
    print("opened")
"""
_NOBODY = 65534


def test_unwritable_journal_file_at_open_says_permission() -> None:
    # Not under tmp_path: root's pytest directory is closed to `nobody`. The directory is the
    # opener's own and writable, as a user's journal directory is; only the file is read-only.
    folder = Path(tempfile.mkdtemp(prefix="llm-oracle-perm-"))
    try:
        path = folder / "j.sqlite"
        Journal(path).close()
        if os.geteuid() == 0:
            os.chown(folder, _NOBODY, _NOBODY)
            os.chown(path, _NOBODY, _NOBODY)
        folder.chmod(0o755)
        path.chmod(0o444)
        done = subprocess.run(
            [sys.executable, "-c", _OPEN_UNPRIVILEGED, str(path), str(_NOBODY)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        problem, _, message = done.stdout.partition("\n")
        assert problem == JournalProblem.PERMISSION.value, done.stdout
        assert "corrupt" not in message and str(path) in message
    finally:
        shutil.rmtree(folder)


# --- a write failure on the half-open trial ----------------------------------------------------
@pytest.mark.parametrize("trial_fails", [False, True], ids=["trial_answers", "trial_fails"])
def test_a_write_failure_on_the_half_open_trial_settles_the_breaker(
    tmp_path: Path, fake: FakeGemini, trial_fails: bool
) -> None:
    """The trial's result settles the breaker even though its row cannot be written: closed
    after an answer, open again (for a new cooldown) after a failure; never half-open for good,
    which would refuse every later question with no trial ever going out."""
    oracle = oracle_on(Journal(tmp_path / "j.sqlite"), fake)
    guard = oracle.guard
    assert guard is not None
    clock = [0.0]
    guard.breaker = CircuitBreaker(2, 30, clock=lambda: clock[0])
    asked = iter(requests_n(7))
    fake.then(ServerError(503), ServerError(503))
    assert [ask(oracle, next(asked)).error_kind for _ in range(2)] == [ErrorKind.SERVER_ERROR] * 2
    assert guard.breaker.state is BreakerState.OPEN
    assert ask(oracle, next(asked)).error_kind is ErrorKind.CIRCUIT_OPEN and fake.count == 2
    oracle.drain_events()

    clock[0] += 30  # the cooldown passes on the breaker's clock
    assert guard.breaker.state is BreakerState.HALF_OPEN
    conn = oracle.journal._write_conn
    assert conn is not None
    conn.execute("PRAGMA query_only = 1")  # SQLite's own read-only refusal: every write fails
    if trial_fails:
        fake.then(ServerError(503))
    trial = ask(oracle, next(asked))
    assert fake.count == 3  # the trial went out
    assert "(permission)" in the_event(oracle, "journal write failed")
    assert oracle.pending_writes == 1 and guard.budget._reserved == 0
    assert guard.budget.spent.calls == 3
    if trial_fails:
        assert trial.error_kind is ErrorKind.SERVER_ERROR
        assert guard.breaker.state is BreakerState.OPEN  # a new cooldown, not half-open
        assert guard.breaker.seconds_left() == 30
        assert ask(oracle, next(asked)).error_kind is ErrorKind.CIRCUIT_OPEN
        assert fake.count == 3
        clock[0] += 30
    else:
        assert trial.source is DecisionSource.BACKEND and trial.decision.action is Action.LONG
        assert guard.breaker.state is BreakerState.CLOSED
        assert guard.breaker.consecutive_failures == 0

    # A later question is asked (and answered), still with the journal refusing writes.
    later = ask(oracle, next(asked))
    assert later.source is DecisionSource.BACKEND and fake.count == 4
    assert guard.breaker.state is BreakerState.CLOSED and guard.budget._reserved == 0
    conn.execute("PRAGMA query_only = 0")
    healed = next(asked)
    assert ask(oracle, healed).source is DecisionSource.BACKEND and fake.count == 5
    assert oracle.pending_writes == 0  # the rows from the fault went in with the next write
    answered = [trial, later] if not trial_fails else [later]
    keys = [o.key for o in answered] + [oracle.key_for(healed)]
    assert set(oracle.journal.lookup(keys)) == set(keys)
    oracle.close()


# --- a second process holding the write lock ---------------------------------------------------
_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@contextmanager
def lock_held_by_another_process(path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.wait(timeout=10)


def test_second_process_holding_the_write_lock(tmp_path: Path, fake: FakeGemini) -> None:
    path = tmp_path / "j.sqlite"
    oracle = oracle_on(Journal(path, busy_timeout_s=0.2), fake)
    holder: list[subprocess.Popen[str]] = []
    lock = lock_held_by_another_process(path)

    def release() -> None:
        proc = holder[0]
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=10)

    message = write_fault_then_recovery(
        oracle,
        fake,
        lambda: holder.append(lock.__enter__()),
        release,
        JournalProblem.LOCKED,
    )
    lock.__exit__(None, None, None)
    assert "locked by another process" in message and "do not move it aside" in message
    # Reads never waited for the lock: the lookups above answered while it was held.
    oracle.close()


def test_locked_at_open_is_not_called_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    script = _HOLD_LOCK.replace(
        'conn.execute("BEGIN IMMEDIATE")',
        'conn.execute("PRAGMA locking_mode = EXCLUSIVE"); conn.execute("BEGIN EXCLUSIVE")',
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(JournalError) as err:
            Journal(path, busy_timeout_s=0.2)
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=10)
    assert err.value.problem is JournalProblem.LOCKED
    assert "locked by another process" in str(err.value) and "move it aside" in str(err.value)
    assert "do not move it aside" in str(err.value)
    Journal(path).close()  # and it opens once the other process let go


# --- a corrupt row ------------------------------------------------------------------------------
def test_a_corrupt_row_is_a_miss_and_a_fresh_answer_supersedes_it(
    tmp_path: Path, fake: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "j.sqlite"
    good, bad = requests_n(2)
    first = oracle_on(Journal(path), fake)
    first.decide_many([good, bad])
    first.close()
    bad_key = first.key_for(bad)
    conn = sqlite3.connect(path)
    conn.execute(
        'UPDATE decisions SET decision_json = \'{"action": "fly"}\' WHERE key = ?', (bad_key,)
    )
    conn.commit()
    conn.close()

    oracle = oracle_on(Journal(path), fake)
    outcomes = oracle.decide_many([good, bad])  # one batch: the bad row must not abort it
    oracle.flush()
    assert [o.source for o in outcomes] == [DecisionSource.JOURNAL, DecisionSource.BACKEND]
    assert fake.count == 3 and oracle.stats.misses == 1
    assert "no longer validate; treated as misses" in caplog.text
    rows = oracle.journal.query(
        "SELECT error_kind, error_detail FROM decisions WHERE key = ? ORDER BY id", (bad_key,)
    )
    assert rows[0][0] == "unreadable" and '"fly"' in str(rows[0][1])  # kept for the audit
    assert rows[1] == (None, None)
    assert oracle.journal.lookup([bad_key])[bad_key] == outcomes[1].decision
    assert_settled(oracle, calls=3)  # the day's spend, read back from the journal
    oracle.close()


# --- a corrupt page -----------------------------------------------------------------------------
def _rows(start: int, n: int, keys: list[str] | None = None) -> list[Any]:
    from llm_oracle.models import JournalEntry, Purpose

    keys = keys or [f"{i:064x}" for i in range(start, start + n)]
    return [
        JournalEntry(
            key=key,
            purpose=Purpose.ENTRY,
            backend="rules",
            model="rules-v1",
            prompt_version="none",
            request_json="{}" + " " * 500,
            decision=OracleDecision(action=Action.HOLD, confidence=0.5),
        )
        for key in keys
    ]


def _fill(path: Path, n: int = 300, keys: list[str] | None = None) -> list[str]:
    """A journal with rows on many pages, all in the main file (checkpointed)."""
    rows = _rows(1, n) + (_rows(0, 0, keys) if keys else [])
    with Journal(path) as journal:
        journal.record_many(rows)
        assert journal._write_conn is not None
        journal._write_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return [r.key for r in rows]


def _corrupt_pages(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        for offset in range(4096 * 2, size - 4096, 4096):
            f.seek(offset + 100)
            f.write(b"\xde\xad\xbe\xef" * 200)


def test_a_corrupt_page_is_found_at_open_and_the_file_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    _fill(path)
    _corrupt_pages(path)
    before = path.read_bytes()
    with pytest.raises(JournalError) as err:
        Journal(path)
    assert err.value.problem is JournalProblem.CORRUPT
    message = str(err.value)
    assert "is not a usable SQLite journal" in message and "integrity check" in message
    assert "Nothing was changed" in message and ".recover" in message
    assert path.read_bytes() == before


def test_a_page_corrupted_under_a_running_bot(tmp_path: Path, fake: FakeGemini) -> None:
    path = tmp_path / "j.sqlite"
    oracle = oracle_on(Journal(path), fake)
    asked = requests_n(20)
    _fill(path, keys=[oracle.key_for(r) for r in asked])  # answers already journaled...
    _corrupt_pages(path)  # ...on pages that then rot
    # Another process commits: this connection's page cache is dropped and the pages re-read.
    other = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError):
        other.execute("INSERT INTO decisions (key) VALUES ('x')")
    other.close()
    outcomes = oracle.decide_many(asked)  # no crash: the lookup fails, the questions are asked
    oracle.flush()
    assert {o.source for o in outcomes} == {DecisionSource.BACKEND} and fake.count == 20
    message = the_event(oracle, "journal read failed")
    assert "(corrupt)" in message and "is not a usable SQLite journal" in message
    assert "every question is a miss" in message
    # The lookup, and the day's spend (counted from this process instead): announced once.
    assert oracle.stats.journal_read_failures == 2
    assert_settled(oracle, calls=20)
    oracle.close()


# --- a full disk --------------------------------------------------------------------------------
class _FullDisk:
    """The write connection of a journal on a full disk: every change fails as SQLite fails."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.full = False

    def execute(self, sql: str, *args: Any) -> Any:
        if self.full and sql.lstrip().upper().startswith(("INSERT", "UPDATE")):
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = 13  # SQLITE_FULL
            error.sqlite_errorname = "SQLITE_FULL"
            raise error
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> Any:
        if self.full:
            self.execute(sql)
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_disk_full_failing_writer(tmp_path: Path, fake: FakeGemini) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    assert journal._write_conn is not None
    disk = _FullDisk(journal._write_conn)
    journal._write_conn = disk  # type: ignore[assignment]
    oracle = oracle_on(journal, fake)
    message = write_fault_then_recovery(
        oracle,
        fake,
        lambda: setattr(disk, "full", True),
        lambda: setattr(disk, "full", False),
        JournalProblem.DISK_FULL,
    )
    assert "the disk is full" in message and "The journal is fine" in message
    oracle.close()


def test_sqlite_full_is_reported_as_disk_full(tmp_path: Path) -> None:
    """The real SQLITE_FULL, from SQLite's page limit, classified by the journal itself."""
    path = tmp_path / "j.sqlite"
    _fill(path)
    with Journal(path) as journal:
        assert journal._write_conn is not None
        pages = journal._write_conn.execute("PRAGMA page_count").fetchone()[0]
        journal._write_conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(JournalError) as err:
            journal.record_many(_rows(1000, 30))
    assert err.value.problem is JournalProblem.DISK_FULL
    assert "the disk is full" in str(err.value)


@contextmanager
def tiny_filesystem(tmp_path: Path, kib: int) -> Iterator[Path]:
    """A real tmpfs of `kib` KiB; skips where mounting is not permitted (not root)."""
    mount_point = Path(tempfile.mkdtemp(dir=tmp_path))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_on_a_tiny_filesystem(tmp_path: Path, fake: FakeGemini) -> None:
    with tiny_filesystem(tmp_path, 256) as fs:
        oracle = oracle_on(Journal(fs / "j.sqlite"), fake)
        filler = fs / "filler"

        def fill_up() -> None:
            stat = os.statvfs(fs)
            filler.write_bytes(b"0" * (stat.f_bavail * stat.f_frsize))

        message = write_fault_then_recovery(
            oracle, fake, fill_up, filler.unlink, JournalProblem.DISK_FULL
        )
        assert f"free space on the disk that holds {fs}" in message
        oracle.close()


def test_close_with_a_locked_journal_is_bounded_and_says_what_is_lost(
    tmp_path: Path, fake: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "j.sqlite"
    oracle = oracle_on(Journal(path, busy_timeout_s=1.0), fake)
    with lock_held_by_another_process(path):
        outcome = ask(oracle, requests_n(1)[0])
        assert outcome.source is DecisionSource.BACKEND and oracle.pending_writes == 1
        oracle.close()  # one last try, bounded by the busy timeout, then it says so
    assert "1 answers could not be journaled and are lost" in caplog.text
