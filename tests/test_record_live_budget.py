"""A live dry-run bot and `llm-oracle record` on one journal, `daily_calls: 10`: 10 calls in all.

The bot (real `freqtrade trade`, dry run, against its own Bybit emulator) asks the fake Gemini on
its candidate candle; then `record` runs a range with more than 10 questions on the same journal
and the same budget. The reservations in the journal are the one budget: the fake receives
exactly 10 requests in total, the bot's among them, and `record` stops at the cap.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bybit_emulator import Emulator
from llm_oracle.journal import Journal
from tests.fake_gemini import start_fake_gemini
from tests.live_bot import live_bot
from tests.test_record_stop import KEY, gemini_overlay, record_command, record_env

pytestmark = pytest.mark.integration

DAILY_CALLS = 10
_BUDGET = {"budget": {"daily_calls": DAILY_CALLS, "daily_tokens": None, "daily_usd": None}}


def test_a_live_bot_and_record_on_one_journal_make_daily_calls_in_total(
    emulator: Emulator, sample_datadir: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite"
    with start_fake_gemini(api_key=KEY) as fake:
        overlay = gemini_overlay(emulator, fake, journal, **_BUDGET)
        block = overlay["llm_oracle"]
        (tmp_path / "bot").mkdir()
        with live_bot(
            tmp_path / "bot", dry_run=True, llm_oracle=block, env={"GEMINI_API_KEY": KEY}
        ) as bot:
            # The bot asks on its candidate candle first: its request is one of the ten.
            assert fake.wait_for(requests=1, timeout=120), bot.log()[-3000:]
            bot_requests = fake.count
            path = tmp_path / "overlay.json"
            path.write_text(json.dumps(overlay))
            command = record_command(path, tmp_path / "rec", sample_datadir, "--no-count")
            run = subprocess.run(
                command, cwd=tmp_path, env=record_env(), capture_output=True, text=True, timeout=300
            )
            output = run.stdout + run.stderr
            assert bot.running, bot.log()[-3000:]
        assert fake.count == DAILY_CALLS, output[-3000:]
        assert 1 <= bot_requests < DAILY_CALLS
        # `record` ran into the cap the bot had started to spend (refusals are failed decisions).
        assert run.returncode == 1, output[-3000:]
        assert "daily budget exhausted" in output
        with Journal(journal, create=False) as j:
            sent = int(j.query("SELECT COALESCE(SUM(attempts), 0) FROM decisions")[0][0])  # type: ignore[call-overload]
            lost = sum(c for _, state, _, c, _ in j.reservations("gemini") if state != "open")
        assert sent + lost == DAILY_CALLS
        print(f"bot requests {bot_requests}, record {DAILY_CALLS - bot_requests}; journaled {sent}")
