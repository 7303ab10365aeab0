"""`llm-oracle record` stops when told: SIGTERM, kill -9 of `record` itself, Ctrl-C then SIGHUP.

Each time: `record`'s freqtrade child and its whole process group are gone, no request reaches
the fake Gemini once the child is gone, and what was answered stays answered (a second signal
kills at once: what hangs in flight is dropped). `--estimate` then spends nothing, and a last
run (at the flex tier) finishes the range without asking an answered question again; the
estimate (decisions and USD, measured on the answers already journaled) is within 10% of what
it records.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bybit_emulator import Emulator
from llm_oracle.journal import Journal
from llm_oracle.models import OracleRequest
from llm_oracle.prompt import render
from tests.factories import ROOT
from tests.fake_gemini import FakeGemini, Hang, Ok, Slow, start_fake_gemini
from tests.freqtrade_run import offline_overlay

pytestmark = pytest.mark.integration

TIMERANGE = "20250606-20250607"
KEY = "AIzaFAKE-record-stop-9876543210"
CONCURRENCY = 4
_CHILD = re.compile(r"recording: freqtrade pid (\d+)")
_ESTIMATE = re.compile(r"--estimate: (\d+) decisions to ask .*~\$([0-9.]+)")
_RECORDED = re.compile(r"llm-oracle record: (\d+) decisions recorded, (\d+) failed .*\$([0-9.]+);")


def record_command(overlay: Path, userdir: Path, datadir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llm_oracle.cli",
        "record",
        "--config",
        str(ROOT / "config.json"),
        "--config",
        str(overlay),
        "--timerange",
        TIMERANGE,
        "--pairs",
        "BTC/USDT:USDT",
        "--userdir",
        str(userdir),
        "--datadir",
        str(datadir),
        *extra,
        "--",
        "--strategy-path",
        str(ROOT / "strategies"),
    ]


def record_env() -> dict[str, str]:
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("GOOGLE_API_KEY", None)
    return env | {"GEMINI_API_KEY": KEY}


def gemini_overlay(emulator: Emulator, fake: FakeGemini, journal: Path, **limits: Any) -> dict:
    block = {
        "backend": "gemini",
        "journal_path": str(journal),
        "timeout_s": 10,
        "gemini": {
            "base_url": fake.url,
            "limits": {"concurrency": CONCURRENCY, "rpm": 100_000, "rpm_burst": 1000, **limits},
        },
    }
    return offline_overlay(emulator.url, llm_oracle=block)


def poll(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def group_gone(pgid: int) -> bool:
    pids = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()]
    members = []
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(pid)
    return not members


def _answered_prompts(journal: Path) -> set[str]:
    with Journal(journal, create=False) as j:
        rows = j.query("SELECT request_json FROM decisions WHERE error_kind IS NULL")
    return {render(OracleRequest.model_validate_json(str(r))).user for (r,) in rows}


def _stop_mid_run(
    command: list[str], fake: FakeGemini, log: Path, how: signal.Signals, cwd: Path
) -> tuple[int, int, int]:
    """Start `record`, stop it once a few answers are back; (exit code, sent at the signal,
    sent once the child was gone)."""
    responded = fake.responded
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=record_env(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        child = int(poll(lambda: _CHILD.search(log.read_text()), 120, "the child").group(1))
        assert fake.wait_for(responded=responded + CONCURRENCY + 1, timeout=120), log.read_text()
        os.kill(proc.pid, how)
        sent_at_signal = fake.count
        code = proc.wait(timeout=60)
        poll(lambda: gone(child), 60, f"freqtrade pid {child} to end")
        poll(lambda: group_gone(child), 30, "its process group to end")
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, sent_at_signal, fake.count


def test_sigterm_and_kill_9_stop_everything_and_a_rerun_finishes_the_range(
    emulator: Emulator, sample_datadir: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite"
    with start_fake_gemini(api_key=KEY) as fake:
        overlay = tmp_path / "overlay.json"
        overlay.write_text(json.dumps(gemini_overlay(emulator, fake, journal)))
        userdir = tmp_path / "user_data"
        command = record_command(overlay, userdir, sample_datadir, "--no-count")
        fake.default = Slow(0.3)

        # 1. SIGTERM: record stops its child (which settles what is in flight) and says so.
        code, at_signal, after = _stop_mid_run(
            command, fake, tmp_path / "1.log", signal.SIGTERM, tmp_path
        )
        assert code == 128 + signal.SIGTERM, (tmp_path / "1.log").read_text()[-3000:]
        # Only requests already admitted when the signal came (at most one per slot) may follow.
        assert after - at_signal <= CONCURRENCY
        with Journal(journal, create=False) as j:
            assert j.count(errors=True) == 0 and j.count() > 0
            assert j.reservations() == []  # in-flight answers were journaled, nothing dangling
            # The summary counts what this run journaled, in-flight answers included.
            summary = _RECORDED.search((tmp_path / "1.log").read_text())
            assert summary and int(summary.group(1)) == j.count()

        # 2. kill -9 of record alone (not its group): the child sees its lifeline break.
        code, at_kill, after = _stop_mid_run(
            command, fake, tmp_path / "2.log", signal.SIGKILL, tmp_path
        )
        assert code == -signal.SIGKILL
        assert after - at_kill <= CONCURRENCY
        # Nothing more arrives: the only process that could send is gone.
        assert fake.count == after

        # 2b. Ctrl-C (SIGINT) stops it the same way, and a second signal (here SIGHUP, a closed
        # terminal) does not wait for hanging calls: the child group is killed.
        fake.default = Hang()
        log = tmp_path / "2b.log"
        before = fake.count
        with log.open("w") as out:
            proc = subprocess.Popen(
                command, cwd=tmp_path, env=record_env(), stdout=out, stderr=subprocess.STDOUT
            )
        try:
            child = int(poll(lambda: _CHILD.search(log.read_text()), 120, "the child").group(1))
            assert fake.wait_for(requests=before + 1, timeout=120), log.read_text()
            proc.send_signal(signal.SIGINT)
            poll(lambda: "a second signal kills it now" in log.read_text(), 30, "the stop")
            assert f"signal {int(signal.SIGINT)}: stopping freqtrade" in log.read_text()
            proc.send_signal(signal.SIGHUP)
            assert proc.wait(timeout=60) == 128 + signal.SIGINT  # the first signal's code
            assert f"freqtrade (pid {child}) killed" in log.read_text(), log.read_text()[-3000:]
            poll(lambda: group_gone(child), 30, "its process group to end")
        finally:
            if proc.poll() is None:
                proc.kill()
            fake.release()
        answered = _answered_prompts(journal)
        sent_before = fake.count

        # 3. `--estimate` (here at the flex tier) counts and prices, and spends nothing.
        fake.default = Ok()
        journaled = len(answered)

        def flex_run(flag: str) -> subprocess.CompletedProcess[str]:
            argv = record_command(overlay, userdir, sample_datadir, "--tier", "flex", flag)
            done = subprocess.run(
                argv, cwd=tmp_path, env=record_env(), capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            return done

        estimate = flex_run("--estimate")
        assert fake.count == sent_before and len(_answered_prompts(journal)) == journaled
        estimated = _ESTIMATE.search(estimate.stdout)
        assert estimated and "at the flex price" in estimate.stdout, estimate.stdout[-3000:]

        # 4. The same command, at the flex tier, finishes the range: a flex recording continues
        # a standard one (the tier is not in the key), at half the price.
        rerun = flex_run("--no-count")
        asked = fake.requests[sent_before:]
        assert asked and not answered & {r.user_text for r in asked}
        assert len({r.digest for r in asked}) == len(asked)
        assert {r.body.get("serviceTier") for r in asked} == {"flex"}
        recorded = _RECORDED.search(rerun.stdout)
        assert recorded, rerun.stdout[-3000:]
        decisions, usd = int(recorded.group(1)), float(recorded.group(3))
        assert recorded.group(2) == "0" and decisions == len(asked)
        # What --estimate said before is within 10% of what the recording then did and cost.
        assert abs(int(estimated.group(1)) - decisions) <= 0.1 * decisions
        assert abs(float(estimated.group(2)) - usd) <= 0.1 * usd
        print(f"estimate {estimated.group(0)!r}; recorded {recorded.group(0)!r}")
