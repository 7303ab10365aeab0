"""`llm-oracle record` end to end: the real freqtrade CLI (subprocess) against the Bybit emulator,
the real google-genai client against the fake Gemini endpoint.

A model that answers anything the schemas allow is never rejected, and a backtest that then
replays with `on_miss: hold` has zero misses and makes zero calls. Stopping and resuming a
recording: tests/test_record_stop.py; the README command: tests/test_record_readme.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bybit_emulator import Emulator
from llm_oracle.journal import Journal
from llm_oracle.models import CONTENT_ERROR_KINDS, ErrorKind
from tests.factories import ROOT
from tests.fake_gemini import FakeGemini, SchemaRandom, start_fake_gemini
from tests.freqtrade_run import FreqtradeRun, offline_overlay, run_freqtrade

pytestmark = pytest.mark.integration

TIMERANGE = "20250606-20250607"
KEY = "AIzaFAKE-record-key-9876543210"
_FINAL = re.compile(
    r"llm-oracle record: (\d+) decisions recorded, (\d+) failed \(.*\), (\d+) calls, "
    r"(\d+) tokens, \$([0-9.]+)"
)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llm_oracle.cli", *args]


def _record_command(overlay: Path, userdir: Path, datadir: Path) -> list[str]:
    return _cli(
        "record",
        "--config",
        str(ROOT / "config.json"),
        "--config",
        str(overlay),
        "--timerange",
        TIMERANGE,
        "--userdir",
        str(userdir),
        "--datadir",
        str(datadir),
        "--no-count",
        "--",
        "--strategy-path",
        str(ROOT / "strategies"),
    )


def _env() -> dict[str, str]:
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("GOOGLE_API_KEY", None)
    env["GEMINI_API_KEY"] = KEY
    return env


def _rows(journal: Path) -> list[tuple[Any, ...]]:
    with Journal(journal, create=False) as j:
        return j.query("SELECT key, request_json, error_kind FROM decisions ORDER BY id")


def _gemini_block(fake: FakeGemini, journal: Path) -> dict[str, Any]:
    return {
        "backend": "gemini",
        "journal_path": str(journal),
        "timeout_s": 10,
        "gemini": {
            "base_url": fake.url,
            "limits": {"concurrency": 4, "rpm": 100_000, "rpm_burst": 1000},
        },
    }


def replay_gemini(emulator: Emulator, journal: Path, datadir: Path, workdir: Path) -> FreqtradeRun:
    """A backtest that replays recorded Gemini answers and holds on a miss (never calls)."""
    return run_freqtrade(
        "backtesting",
        ["--cache", "none", "--export", "none", "--timerange", TIMERANGE],
        workdir=workdir,
        overlay=offline_overlay(
            emulator.url,
            llm_oracle={
                "backend": "replay",
                "journal_path": str(journal),
                "replay": {"source": "gemini", "on_miss": "hold"},
            },
        ),
        datadir=datadir,
    )


def test_a_model_that_follows_the_schema_is_never_rejected_and_replays_with_zero_misses(
    emulator: Emulator, sample_datadir: Path, tmp_path: Path
) -> None:
    """An independent fake that answers anything the per-question schema allows (any allowed
    action, any number in range with the bounds themselves, nulls, omitted optionals), over a
    day of the sample: rejected answers < 1%, no breaker opening, and a replay with
    `on_miss: hold` has zero misses."""
    journal = tmp_path / "journal.sqlite"
    with start_fake_gemini(api_key=KEY) as fake:
        fake.default = SchemaRandom(seed=1)
        overlay = tmp_path / "overlay.json"
        overlay.write_text(
            json.dumps(offline_overlay(emulator.url, llm_oracle=_gemini_block(fake, journal)))
        )
        command = _record_command(overlay, tmp_path / "user_data", sample_datadir)
        record = subprocess.run(
            command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
        )
        assert record.returncode == 0, record.stdout[-3000:] + record.stderr[-3000:]
        with Journal(journal, create=False) as j:
            kinds = [k for (k,) in j.query("SELECT error_kind FROM decisions")]
        answers = kinds.count(None)
        rejected = sum(1 for k in kinds if k is not None and ErrorKind(k).is_content)
        assert answers > 50 and rejected / (answers + rejected) < 0.01, (answers, rejected)
        assert set(kinds) <= {None, *CONTENT_ERROR_KINDS}  # no service failure, no refusal
        assert "circuit open" not in record.stdout + record.stderr
        assert fake.count == len(kinds)

        calls_before_replay = fake.count
        replay = replay_gemini(emulator, journal, sample_datadir, tmp_path / "replay")
        assert replay.returncode == 0, replay.output[-3000:]
        summary = replay.oracle_summary()
        assert " 0 misses, 0 unanswerable," in summary and " 0 backend calls" in summary, summary
        assert fake.count == calls_before_replay
        print(f"schema-following fake: {answers} answers, {rejected} rejected; replay: {summary}")
