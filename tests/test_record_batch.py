"""`record --tier batch`: Gemini's Batch API at half price, resumable across restarts.

Against the fake Gemini taught the batch endpoints google-genai 3.4 calls
(`models/<model>:batchGenerateContent`, then `batches/<id>` until done). A first `record` is
stopped (SIGTERM) while its job is still running: the job's name and requests are in the journal.
The same command then collects that job instead of submitting its questions again, and finishes
the range in rounds (entries, then the exit reviews their trades raise). No synchronous
`generateContent` call is made; every answer is journaled at half the standard price.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from bybit_emulator import Emulator
from llm_oracle.backends.gemini import cost_usd
from llm_oracle.config import GeminiConfig
from llm_oracle.journal import Journal
from llm_oracle.models import Usage
from tests.fake_gemini import USAGE, start_fake_gemini
from tests.test_record_stop import KEY, gemini_overlay, poll, record_command, record_env

pytestmark = pytest.mark.integration


def test_batch_tier_resumes_its_job_after_a_restart_and_costs_half(
    emulator: Emulator, sample_datadir: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite"
    with start_fake_gemini(api_key=KEY) as fake:
        fake.batch_polls = 10**9  # the first job stays running until the test says otherwise
        overlay = tmp_path / "overlay.json"
        overlay.write_text(json.dumps(gemini_overlay(emulator, fake, journal)))
        userdir = tmp_path / "user_data"
        command = record_command(
            overlay, userdir, sample_datadir, "--tier", "batch", "--batch-poll-s", "0.05"
        )

        log = tmp_path / "first.log"
        with log.open("w") as out:
            first = subprocess.Popen(
                command, cwd=tmp_path, env=record_env(), stdout=out, stderr=subprocess.STDOUT
            )
        try:
            poll(lambda: "questions submitted (journaled)" in log.read_text(), 120, "a job")
            # A running job says so once (not at every poll), with how long it has waited.
            status = "batch job batches/fake1: JOB_STATE_RUNNING after 0:00:"
            poll(lambda: status in log.read_text(), 60, "the job's status line")
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-3000:]
            assert log.read_text().count(status) == 1  # polled every 0.05 s, said once
        finally:
            if first.poll() is None:
                first.kill()
        assert len(fake.batch_jobs) == 1
        submitted = len(fake.batch_requests)
        with Journal(journal, create=False) as j:
            assert j.open_batch_jobs("gemini", "gemini-3.8-flash") == ["batches/fake1"]
            assert j.count() == 0

        fake.batch_polls = 1
        rerun = subprocess.run(
            command, cwd=tmp_path, env=record_env(), capture_output=True, text=True, timeout=300
        )
        output = rerun.stdout + rerun.stderr
        assert rerun.returncode == 0, output[-4000:]
        assert "resuming batch job batches/fake1" in output
        keys = [r["metadata"]["key"] for r in fake.batch_requests]
        assert len(keys) == len(set(keys)) > submitted  # nothing asked twice; later rounds ran
        assert len(fake.batch_jobs) >= 2
        assert all(":generateContent" not in r.path for r in fake.requests)
        usage = Usage(
            prompt_tokens=USAGE["promptTokenCount"],
            output_tokens=USAGE["candidatesTokenCount"],
            thinking_tokens=USAGE["thoughtsTokenCount"],
            cached_tokens=USAGE["cachedContentTokenCount"],
        )
        half = cost_usd(usage, GeminiConfig().price) / 2
        with Journal(journal, create=False) as j:
            rows = j.query("SELECT key, cost_usd, attempts, error_kind FROM decisions")
            assert j.open_batch_jobs("gemini", "gemini-3.8-flash") == []
            assert j.reservations() == []
        assert sorted(str(r[0]) for r in rows) == sorted(keys)
        assert all(r[3] is None and r[2] == 1 and float(r[1]) == pytest.approx(half) for r in rows)
        print(
            "\n".join(line for line in output.splitlines() if "batch" in line and "pid" not in line)
        )
