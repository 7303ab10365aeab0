"""One daily budget for every process on a journal.

Two recorders on the same journal and range, started together, with `daily_calls: 10`: the fake
Gemini receives exactly 10 requests in total, no question twice (a question the other recorder is
asking waits for its answer), and every request is accounted for in the journal (an answer that
lost a race would keep its cost: tests/test_journal_reservations.py), as `stats` shows. Each
recorder's summary counts its own rows only, and the de-duplication really ran: one recorder
took another's answer to a question both were asking ("answered by another process").
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bybit_emulator import Emulator
from llm_oracle.journal import Journal
from tests.fake_gemini import Slow, start_fake_gemini
from tests.test_record_stop import _RECORDED, KEY, gemini_overlay, record_command, record_env

pytestmark = pytest.mark.integration

DAILY_CALLS = 10


def test_two_recorders_on_one_journal_share_the_daily_call_cap(
    emulator: Emulator, sample_datadir: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite"
    with start_fake_gemini(api_key=KEY) as fake:
        # Slow enough that both recorders are asking at the same time (10 calls, one question
        # at a time per recorder: ~5 s in which the later one catches up through journal hits).
        fake.default = Slow(0.5)
        overlay = tmp_path / "overlay.json"
        limits = {"budget": {"daily_calls": DAILY_CALLS, "daily_tokens": None, "daily_usd": None}}
        overlay.write_text(json.dumps(gemini_overlay(emulator, fake, journal, **limits)))
        procs = []
        for name in ("a", "b"):
            command = record_command(overlay, tmp_path / name, sample_datadir, "--no-count")
            log = (tmp_path / f"{name}.log").open("w")
            procs.append(
                subprocess.Popen(
                    command, cwd=tmp_path, env=record_env(), stdout=log, stderr=subprocess.STDOUT
                )
            )
        codes = [p.wait(timeout=300) for p in procs]
        logs = [(tmp_path / f"{n}.log").read_text() for n in ("a", "b")]
        assert fake.count == DAILY_CALLS, logs
        # Neither paid for a question the other was asking: no prompt reached the fake twice.
        assert len({r.user_text for r in fake.requests}) == DAILY_CALLS
        # Both ran into the cap (its refusals are failed decisions): exit code 1 for both.
        assert codes == [1, 1], [log[-2000:] for log in logs]
        assert all("daily budget exhausted" in log for log in logs)
        elsewhere = [re.search(r"(\d+) answered by another process", log) for log in logs]
        assert sum(int(m.group(1)) for m in elsewhere if m) > 0, logs
        summaries = [_RECORDED.search(log) for log in logs]
        assert all(summaries), logs

        with Journal(journal, create=False) as j:
            journaled = int(j.query("SELECT COALESCE(SUM(attempts), 0) FROM decisions")[0][0])  # type: ignore[call-overload]
            reserved = j.reservations("gemini")
        lost = sum(calls for _, state, _, calls, _ in reserved if state == "unrecorded")
        assert all(state == "unrecorded" for _, state, _, _, _ in reserved)
        assert journaled + lost == DAILY_CALLS  # every request sent is in the journal
        # Each run counts its own rows: together, every row once.
        with Journal(journal, create=False) as j:
            rows = j.count() + j.count(errors=True)
        assert sum(int(m.group(1)) + int(m.group(2)) for m in summaries if m) == rows

        stats = subprocess.run(
            [sys.executable, "-m", "llm_oracle.cli", "stats", "--config", str(overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stats.returncode == 0, stats.stderr
        found = re.search(r"requests sent: (\d+) in total", stats.stdout)
        assert found and int(found.group(1)) == DAILY_CALLS, stats.stdout
        print(f"journaled {journaled}, lost races {lost}; {found.group(0)}")
