"""Wall time of `llm-oracle report` on the shipped sample with the `rules` backend.

The README's command, through the real CLI, offline against the Bybit emulator, in a fresh user
directory: the first run records the rules decisions on the way (as on a fresh clone), and
`--runs 2` times a second run that replays them. Prints the verdict, the headline table and the
seconds per phase. Target: under 2 minutes on 2 cores.

    .venv/bin/python bench/report_sample.py [--runs 1] [--seeds N] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bybit_emulator import start_emulator  # noqa: E402
from tests.factories import DATA_DIR, ROOT  # noqa: E402
from tests.freqtrade_run import offline_overlay  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=None, help="default: the config's")
    parser.add_argument("--workers", type=int, default=None, help="default: the CPU count")
    parser.add_argument("--keep", type=Path, default=None, help="copy the report directory here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, start_emulator(port=0) as emulator:
        root = Path(tmp)
        overlay = root / "offline.json"
        overlay.write_text(json.dumps(offline_overlay(emulator.url)))
        command = [
            sys.executable,
            "-m",
            "llm_oracle.report",
            "--config",
            str(ROOT / "config.json"),
            "--config",
            str(overlay),
            "--userdir",
            str(root / "user_data"),
            "--datadir",
            str(DATA_DIR.parent),
            "--name",
            "sample",
        ]
        if args.seeds is not None:
            command += ["--seeds", str(args.seeds)]
        if args.workers is not None:
            command += ["--workers", str(args.workers)]
        command += ["--", "--strategy-path", str(ROOT / "strategies")]
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        for run in range(1, args.runs + 1):
            started = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, env=env)
            elapsed = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"report failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
            report = json.loads((root / "user_data/reports/sample/report.json").read_text())
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in report["seconds"].items())
            journal = "records the rules decisions" if run == 1 else "replays the journal"
            print(f"run {run} ({journal}): {elapsed:.1f} s wall; {phases}")
        print(proc.stdout)
        if args.keep is not None:
            shutil.copytree(root / "user_data/reports/sample", args.keep, dirs_exist_ok=True)
        print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
