"""`llm-oracle record` and `stats` without Freqtrade: argument checks, the overlay, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_oracle.cli import main, record_overlay
from llm_oracle.config import load_config
from llm_oracle.journal import Journal
from llm_oracle.models import Action, ErrorKind, JournalEntry, OracleDecision, Purpose, Usage


def _config(tmp_path: Path, block: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"llm_oracle": block}))
    return path


@pytest.mark.parametrize(
    ("block", "source"),
    [
        ({"backend": "gemini"}, "gemini"),
        ({"backend": "replay", "replay": {"source": "gemini"}}, "gemini"),
        ({"backend": "rules"}, "rules"),
    ],
)
def test_record_overlay_replays_and_calls_the_source(block: dict, source: str) -> None:
    overlay = record_overlay(block)
    assert overlay["backend"] == "replay" and overlay["replay"]["on_miss"] == f"call:{source}"
    assert overlay["replay"]["source"] == source
    assert overlay["recording"] is True and overlay["progress"] is False
    load_config({**block, **overlay})  # the merged block is valid


def test_record_gemini_without_key_stops_before_freqtrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    config = _config(tmp_path, {"backend": "gemini", "journal_path": str(tmp_path / "j.sqlite")})
    code = main(["record", "--config", str(config), "--timerange", "20250606-20250607"])
    assert code == 2
    assert "GEMINI_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "j.sqlite").exists()


def test_record_rejects_a_bad_timerange(tmp_path: Path) -> None:
    config = _config(tmp_path, {"backend": "rules"})
    with pytest.raises(SystemExit):
        main(["record", "--config", str(config), "--timerange", "2025-06-06"])


def test_stats_reports_errors_tokens_usd_and_latency_per_model_and_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal_path = tmp_path / "j.sqlite"

    def row(
        seed: int, error: ErrorKind | None = None, attempts: int = 1, key: int | None = None
    ) -> JournalEntry:
        return JournalEntry(
            key=f"{seed if key is None else key:064x}",
            purpose=Purpose.ENTRY,
            backend="gemini",
            model="gemini-3-flash-preview",
            prompt_version="v1",
            request_json="{}",
            decision=None if error else OracleDecision(action=Action.HOLD, confidence=0.5),
            error_kind=error,
            usage=Usage(prompt_tokens=400, output_tokens=50, thinking_tokens=30, cached_tokens=100),
            cost_usd=0.001,
            latency_ms=100.0 * seed if attempts else 0.0,
            attempts=attempts,
            model_version=None if attempts == 0 else "gemini-3-flash-preview",
        )

    with Journal(journal_path) as journal:
        journal.record_many(
            [row(1), row(2), row(3, ErrorKind.TIMEOUT), row(4, ErrorKind.CIRCUIT_OPEN, 0)]
        )
        # A question with two unusable answers (unanswerable at the default of 2), one with one.
        journal.record_many(
            [
                row(5, ErrorKind.INVALID_DECISION),
                row(6, ErrorKind.INVALID_JSON, key=5),
                row(7, ErrorKind.INVALID_DECISION),
            ]
        )
    config = _config(tmp_path, {"journal_path": str(journal_path)})
    assert main(["stats", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "7 rows, 2 answers, 5 failed" in out
    line = next(x for x in out.splitlines() if x.startswith("gemini/") and "all days" in x)
    # answers failed requests tokens cached USD p50 p95
    assert line.split()[3:9] == ["2", "5", "6", "3360", "700", "0.0070"]
    assert float(line.split()[9]) == 400.0  # p50 over real calls (100, 200, 300, 500...700)
    assert "errors by kind: circuit_open 1, invalid_decision 2, invalid_json 1, timeout 1" in out
    assert "answered by: gemini/gemini-3-flash-preview: gemini-3-flash-preview 6" in out
    assert "unanswerable questions (>= 2 unusable answers, none usable): 1;" in out
    assert "questions with unusable answers: 2" in out
