"""Backtest time with oracle replay vs the same strategy with the oracle disabled.

Both run the real `freqtrade backtesting` on the shipped sample, offline against the Bybit
emulator, with 1m detail candles (`--timeframe-detail 1m`, as `make demo`), alternating A B A B
so drift in machine speed hits both alike. Two variants, each its own README row: exit reviews
off (entry decisions only) and on (the shipped default). Per variant the journal is filled by one
recording run first; the timed replay runs then answer every decision from it (on_miss hold, so a
miss could not hide as a call). Figures: wall time and CPU time (user + sys of the freqtrade
process, steadier on a shared machine) of each run, the median ratio replay / disabled, and the
oracle's own time from its summary line. Target (shipped default): median ratio <= 1.10.

    .venv/bin/python bench/replay_overhead.py [--runs 5] [--reviews both|on|off]
        [--detail 1m|none] [--timerange 20250602-20250619]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bybit_emulator import start_emulator  # noqa: E402
from tests.factories import DATA_DIR  # noqa: E402
from tests.freqtrade_run import FreqtradeRun, offline_overlay, run_freqtrade  # noqa: E402

ORACLE_TIME = re.compile(r"([0-9.]+) s in oracle")
DECISIONS = re.compile(r"oracle: (\d+) candidates \+ (\d+) exit reviews")


@dataclass(frozen=True)
class Timed:
    wall_s: float
    cpu_s: float
    run: FreqtradeRun


def found(pattern: re.Pattern[str], text: str) -> tuple[str, ...]:
    match = pattern.search(text)
    assert match, f"{pattern.pattern!r} not in {text!r}"
    return match.groups()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_backtest(url: str, workdir: Path, block: dict, args: argparse.Namespace) -> Timed:
    cli = ["--cache", "none", "--export", "none"]
    if args.detail != "none":
        cli += ["--timeframe-detail", args.detail]
    if args.timerange:
        cli += ["--timerange", args.timerange]
    cpu, started = children_cpu(), time.perf_counter()
    run = run_freqtrade(
        "backtesting",
        cli,
        workdir=workdir,
        overlay=offline_overlay(url, llm_oracle=block),
        datadir=DATA_DIR.parent,
    )
    wall, cpu = time.perf_counter() - started, children_cpu() - cpu
    if run.returncode != 0 or "STRATEGY SUMMARY" not in run.output:
        raise SystemExit(f"backtest failed:\n{run.output[-3000:]}")
    return Timed(wall, cpu, run)


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def variant(url: str, root: Path, reviews: bool, args: argparse.Namespace) -> dict[str, Any]:
    name = "reviews_on" if reviews else "reviews_off"
    journal = str(root / f"{name}.sqlite")
    review = {"exit_review": {"enabled": reviews}}
    record = {"journal_path": journal, "replay": {"on_miss": "call:rules"}, **review}
    replay = {"journal_path": journal, "replay": {"on_miss": "hold"}, **review}
    disabled = {"enabled": False}
    recording = timed_backtest(url, root / f"{name}-record", record, args)
    print(recording.run.oracle_summary(), flush=True)
    times: dict[str, list[Timed]] = {"replay": [], "disabled": []}
    for i in range(args.runs):
        for side, block in (("replay", replay), ("disabled", disabled)):
            timed = timed_backtest(url, root / f"{name}-{side}{i}", block, args)
            if side == "replay":
                assert " 0 misses" in timed.run.oracle_summary(), timed.run.oracle_summary()
            times[side].append(timed)
            print(
                f"{name} run {i + 1} {side:<8} wall {timed.wall_s:6.2f} s",
                f"cpu {timed.cpu_s:6.2f} s",
                flush=True,
            )
    replays, disableds = times["replay"], times["disabled"]
    summaries = [t.run.oracle_summary() for t in replays]
    entries, reviews_n = (int(n) for n in found(DECISIONS, summaries[0]))
    return {
        "variant": f"exit reviews {'on' if reviews else 'off'}",
        "decisions_replayed": {"entries": entries, "exit_reviews": reviews_n},
        "replay_wall_median_s": round(statistics.median(t.wall_s for t in replays), 2),
        "disabled_wall_median_s": round(statistics.median(t.wall_s for t in disableds), 2),
        "replay_cpu_median_s": round(statistics.median(t.cpu_s for t in replays), 2),
        "disabled_cpu_median_s": round(statistics.median(t.cpu_s for t in disableds), 2),
        "ratio_wall": spread(
            [r.wall_s / d.wall_s for r, d in zip(replays, disableds, strict=True)]
        ),
        "ratio_cpu": spread([r.cpu_s / d.cpu_s for r, d in zip(replays, disableds, strict=True)]),
        "oracle_own_s": spread([float(found(ORACLE_TIME, s)[0]) for s in summaries]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reviews", choices=("both", "on", "off"), default="both")
    parser.add_argument("--detail", default="1m", help="detail timeframe, or none")
    parser.add_argument("--timerange", default=None, help="default: the whole sample")
    args = parser.parse_args()
    chosen = {"both": (False, True), "on": (True,), "off": (False,)}[args.reviews]
    reports = []
    with tempfile.TemporaryDirectory() as tmp, start_emulator(port=0) as emulator:
        for reviews in chosen:
            reports.append(variant(emulator.url, Path(tmp), reviews, args))
        unexpected = len(emulator.unexpected_requests())
    print(
        json.dumps(
            {
                "runs": args.runs,
                "detail": args.detail,
                "variants": reports,
                "unexpected": unexpected,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
