"""Backtest wall time with oracle replay vs the same strategy with the oracle disabled.

Both run the real `freqtrade backtesting` on the shipped sample, offline against the Bybit
emulator, alternating A B A B so drift in machine speed hits both alike. The journal is filled by
one recording run first; the timed replay runs then answer every candidate from it (on_miss hold,
so a miss could not hide as a call). Target: median ratio <= 1.10.

    .venv/bin/python bench/replay_overhead.py [--runs 3] [--timerange 20250602-20250619]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bybit_emulator import start_emulator  # noqa: E402
from tests.factories import DATA_DIR  # noqa: E402
from tests.freqtrade_run import FreqtradeRun, offline_overlay, run_freqtrade  # noqa: E402


def timed_backtest(
    url: str, workdir: Path, block: dict, timerange: str | None
) -> tuple[float, FreqtradeRun]:
    args = ["--cache", "none", "--export", "none"]
    if timerange:
        args += ["--timerange", timerange]
    started = time.perf_counter()
    run = run_freqtrade(
        "backtesting",
        args,
        workdir=workdir,
        overlay=offline_overlay(url, llm_oracle=block),
        datadir=DATA_DIR.parent,
    )
    elapsed = time.perf_counter() - started
    if run.returncode != 0 or "STRATEGY SUMMARY" not in run.output:
        raise SystemExit(f"backtest failed:\n{run.output[-3000:]}")
    return elapsed, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timerange", default=None, help="default: the whole sample")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, start_emulator(port=0) as emulator:
        root = Path(tmp)
        journal = str(root / "journal.sqlite")
        record = {"journal_path": journal, "replay": {"on_miss": "call:rules"}}
        replay = {"journal_path": journal, "replay": {"on_miss": "hold"}}
        disabled = {"enabled": False}
        _, recording = timed_backtest(emulator.url, root / "record", record, args.timerange)
        print(recording.oracle_summary())
        times: dict[str, list[float]] = {"replay": [], "disabled": []}
        for i in range(args.runs):
            for name, block in (("replay", replay), ("disabled", disabled)):
                elapsed, run = timed_backtest(
                    emulator.url, root / f"{name}{i}", block, args.timerange
                )
                if name == "replay":
                    assert " 0 misses" in run.oracle_summary(), run.oracle_summary()
                times[name].append(elapsed)
                print(f"run {i + 1} {name:<8} {elapsed:6.2f} s", flush=True)
        ratios = [r / d for r, d in zip(times["replay"], times["disabled"], strict=True)]
        report = {
            "runs": args.runs,
            "replay_median_s": round(statistics.median(times["replay"]), 2),
            "disabled_median_s": round(statistics.median(times["disabled"]), 2),
            "ratio_median": round(statistics.median(ratios), 3),
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "unexpected_emulator_requests": len(emulator.unexpected_requests()),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
