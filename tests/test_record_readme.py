"""The README's record command, run verbatim in a fresh copy of the files it needs.

Only two things are added, as a user would: the API key in the environment, and a config overlay
pointing `gemini.base_url` at the fake Gemini. Nothing starts the emulator: `record` does, on the
offline overlay's port (or reuses one that answers there). The counting pass's estimate of the
decisions is checked against what the recording then records (within 10%).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from llm_oracle.journal import Journal
from tests.factories import DATA_DIR, ROOT
from tests.fake_gemini import start_fake_gemini

pytestmark = pytest.mark.integration

KEY = "AIzaFAKE-readme-key-0123456789"
# The command as README.md shows it (section "Gemini: live trading, recording and replay").
README_COMMAND = (
    ".venv/bin/llm-oracle record --source gemini --config config.json "
    "--config user_data/config.offline.json --timerange 20250606-20250607 --pairs BTC/USDT:USDT"
)
_ESTIMATE = re.compile(r"--estimate: (\d+) decisions to ask \((\d+) entries")
_RECORDED = re.compile(r"llm-oracle record: (\d+) decisions recorded, (\d+) failed")


def fresh_copy(target: Path) -> Path:
    """What a clone holds that the command reads: config files, strategy, sample data, venv."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "config.json", target / "config.json")
    (target / "user_data").mkdir()
    shutil.copy(ROOT / "user_data" / "config.offline.json", target / "user_data")
    shutil.copytree(ROOT / "strategies", target / "strategies")
    data = target / "user_data" / "data" / "bybit" / "futures"
    data.mkdir(parents=True)
    for path in DATA_DIR.glob("*.feather"):
        if "-1m-" not in path.name:  # the command uses 3m candles (1m is for --timeframe-detail)
            shutil.copy(path, data / path.name)
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


def test_readme_record_command_as_written_records_a_day(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"\n{README_COMMAND}\n" in readme, "README record command changed"
    clone = fresh_copy(tmp_path / "clone")
    with start_fake_gemini(api_key=KEY) as fake:
        (clone / "fake.json").write_text(
            json.dumps({"llm_oracle": {"gemini": {"base_url": fake.url}}})
        )
        env = {k: v for k, v in os.environ.items() if k not in ("GOOGLE_API_KEY",)}
        env |= {"GEMINI_API_KEY": KEY, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        argv = [*shlex.split(README_COMMAND), "--config", "fake.json"]
        run = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-4000:]
        estimated = _ESTIMATE.search(run.stdout)
        recorded = _RECORDED.search(run.stdout)
        assert estimated and recorded, output[-4000:]
        decisions, failed = int(recorded.group(1)), int(recorded.group(2))
        assert failed == 0 and decisions == fake.count > 15
        assert abs(int(estimated.group(1)) - decisions) <= 0.1 * decisions, (estimated, recorded)
        # One bar for the whole run, with the counting pass's total.
        assert f"/{estimated.group(1)} [" in run.stderr or f"{decisions}/{decisions}" in run.stderr
        # Its own emulator: on the overlay's port, or beside another run's that holds it.
        assert "started the offline Bybit emulator on http://127.0.0.1:18765" in run.stderr or (
            "127.0.0.1:18765 serves another run, ccxt points here instead" in run.stderr
        )
    journal = clone / "user_data" / "oracle" / "journal.sqlite"
    with Journal(journal, create=False) as j:
        assert j.count() == decisions and j.count(errors=True) == 0
        assert j.reservations() == []  # every reservation was taken over by its row
