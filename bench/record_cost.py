"""Recording cost per decision, standard vs flex vs batch, and how close `--estimate` comes.

Runs the README's `llm-oracle record` (shipped config.json + the offline overlay; `record` starts
the emulator) over one day of three pairs against the fake Gemini on 127.0.0.1, once per tier,
each into a fresh journal, after an `--estimate` of the same range. The fake's usage is fixed
(400 prompt tokens of which 100 cached, 50 output, 30 thinking), so USD per decision measures the
pricing path, not a model; the estimate's first line (no answers in the journal yet) shows what
the real prompt size would cost at list price.

    .venv/bin/python bench/record_cost.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fake_gemini import start_fake_gemini  # noqa: E402

KEY = "AIzaFAKE-bench-record-0123456789"
TIMERANGE = "20250606-20250607"
PAIRS = ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"]
_ESTIMATE = re.compile(r"--estimate: (\d+) decisions to ask .*~\$([0-9.]+)")
_RECORDED = re.compile(r"llm-oracle record: (\d+) decisions recorded, (\d+) failed .*\$([0-9.]+);")


def record(workdir: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    overlay = workdir / "bench.json"
    block = {
        "journal_path": str(workdir / "journal.sqlite"),
        "gemini": {"base_url": url, "limits": {"rpm": 6000, "rpm_burst": 100}},
    }
    overlay.write_text(json.dumps({"llm_oracle": block}))
    command = [str(ROOT / ".venv/bin/llm-oracle"), "record", "--source", "gemini"]
    command += ["--config", "config.json", "--config", "user_data/config.offline.json"]
    command += ["--config", str(overlay), "--timerange", TIMERANGE, "--pairs", *PAIRS, *extra]
    env = {**os.environ, "GEMINI_API_KEY": KEY, "NO_PROXY": "127.0.0.1,localhost"}
    env.pop("GOOGLE_API_KEY", None)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)


def main() -> None:
    rows = []
    with start_fake_gemini(api_key=KEY) as fake, tempfile.TemporaryDirectory() as tmp:
        for tier in ("standard", "flex", "batch"):
            workdir = Path(tmp) / tier
            workdir.mkdir()
            estimate = _ESTIMATE.search(record(workdir, fake.url, "--estimate").stdout)
            started = time.perf_counter()
            # The fake finishes a batch job on its second poll; Google takes minutes to hours.
            extra = ["--batch-poll-s", "0.1"] if tier == "batch" else ["--no-count"]
            run = record(workdir, fake.url, "--tier", tier, *extra)
            wall = time.perf_counter() - started
            found = _RECORDED.search(run.stdout)
            assert estimate and found, run.stdout[-2000:] + run.stderr[-2000:]
            decisions, failed, usd = int(found.group(1)), int(found.group(2)), float(found.group(3))
            rows.append((tier, decisions, failed, usd, wall, estimate.group(1), estimate.group(2)))
    standard = rows[0][3] / rows[0][1]
    for tier, decisions, failed, usd, wall, est_n, est_usd in rows:
        per = usd / decisions
        print(
            f"{tier:>8}: {decisions} decisions ({failed} failed) in {wall:.1f} s, ${usd:.4f}, "
            f"${per:.6f} per decision = {per / standard:.2f} x standard; first --estimate "
            f"(no answers yet, real prompt size): {est_n} decisions, ${est_usd} standard"
        )


if __name__ == "__main__":
    main()
