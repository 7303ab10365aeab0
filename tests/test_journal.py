import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from llm_oracle.journal import SCHEMA_VERSION, Journal, JournalError
from llm_oracle.models import Action, ErrorKind, JournalEntry, OracleDecision, Purpose, Usage


def entry(
    key_seed: int, *, error: ErrorKind | None = None, confidence: float = 0.7
) -> JournalEntry:
    return JournalEntry(
        key=f"{key_seed:064x}",
        purpose=Purpose.ENTRY,
        backend="rules",
        model="rules-v1",
        prompt_version="none",
        request_json='{"r":1}',
        decision=None
        if error
        else OracleDecision(action=Action.LONG, confidence=confidence, stop_loss=0.01),
        raw_response=None if error else '{"action":"long"}',
        usage=Usage(prompt_tokens=10, output_tokens=5),
        latency_ms=12.5,
        cost_usd=0.0001,
        error_kind=error,
        error_detail="boom" if error else None,
    )


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        assert journal.record(entry(1)) is True
    with Journal(path) as journal:
        found = journal.lookup([f"{1:064x}", f"{2:064x}"])
        assert list(found) == [f"{1:064x}"]
        assert found[f"{1:064x}"] == entry(1).decision
        row = journal.query("SELECT prompt_tokens, latency_ms, raw_response FROM decisions")[0]
        assert row == (10, 12.5, '{"action":"long"}')


def test_an_answered_key_is_never_overwritten(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        assert journal.record(entry(1, confidence=0.7))
        assert not journal.record(entry(1, confidence=0.9))
        assert journal.lookup([f"{1:064x}"])[f"{1:064x}"].confidence == 0.7
        assert journal.count() == 1


def test_failed_attempts_are_kept_but_never_served(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        assert journal.record(entry(3, error=ErrorKind.TIMEOUT))
        assert journal.record(entry(3, error=ErrorKind.SERVER_ERROR))
        assert journal.lookup([f"{3:064x}"]) == {}
        assert journal.record(entry(3))
        assert f"{3:064x}" in journal.lookup([f"{3:064x}"])
        assert journal.count(errors=True) == 2


def test_lookup_handles_more_keys_than_one_chunk(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        assert journal.record_many(entry(i) for i in range(1, 1201)) == 1200
        keys = [f"{i:064x}" for i in range(0, 1300)]
        assert len(journal.lookup(keys)) == 1200


def test_corrupt_file_gives_clear_error_and_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    garbage = b"this is not sqlite at all" * 100
    path.write_bytes(garbage)
    with pytest.raises(JournalError, match="not a usable SQLite journal"):
        Journal(path)
    assert path.read_bytes() == garbage


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE trades (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="not an llm_oracle journal.*trades"):
        Journal(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(JournalError, match="newer"):
        Journal(path)


def test_missing_journal_without_create(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="does not exist"):
        Journal(tmp_path / "none.sqlite", create=False)


def _writer(path: str, start: int, count: int, barrier: Any) -> None:
    journal = Journal(Path(path))
    barrier.wait()
    for i in range(start, start + count):
        journal.record(entry(i))
        journal.record(entry(i, error=ErrorKind.TIMEOUT))
    journal.close()


def test_two_processes_writing_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    # Overlapping key ranges: 1..300 and 151..450, so 150 keys race for the same answer slot.
    procs = [
        ctx.Process(target=_writer, args=(str(path), 1, 300, barrier)),
        ctx.Process(target=_writer, args=(str(path), 151, 300, barrier)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with Journal(path) as journal:
        assert journal.count() == 450
        assert journal.count(errors=True) == 600
        assert journal.query("SELECT COUNT(*) FROM decisions WHERE id > 0")[0][0] == 1050
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
