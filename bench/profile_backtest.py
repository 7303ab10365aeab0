"""Where the oracle's backtest overhead goes: cProfile of replay vs oracle disabled, side by side.

Runs the real `freqtrade backtesting` twice under cProfile (whole sample, 1m detail, offline
against the Bybit emulator): once replaying a journal recorded just before (exit reviews as
configured, shipped default on) and once with the oracle disabled. Prints the functions of
`strategies/` and `llm_oracle/`, and the Freqtrade callbacks that call them, by cumulative time in
each run and the difference. Profiled times are inflated (about 2-3x for Python-heavy code): read
them as shares, and time the whole commands with bench/replay_overhead.py.

    .venv/bin/python bench/profile_backtest.py [--reviews on|off] [--top 25]
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bybit_emulator import start_emulator  # noqa: E402
from tests.factories import DATA_DIR  # noqa: E402
from tests.freqtrade_run import (  # noqa: E402
    freqtrade_argv,
    loopback_env,
    offline_overlay,
    prepare_run,
    run_freqtrade,
)

OURS = ("/strategies/", "/llm_oracle/")
FREQTRADE_HOOKS = {"bot_loop_start", "advise_entry", "should_exit", "wrapper", "deepcopy"}

Row = tuple[int, float, float]  # calls, own time, cumulative time


def profiled_backtest(url: str, workdir: Path, block: dict, cli: list[str]) -> dict[str, Row]:
    overlay = offline_overlay(url, llm_oracle=block)
    userdir, overlay_path = prepare_run(workdir, overlay)
    out = workdir / "backtest.prof"
    argv = freqtrade_argv("backtesting", overlay_path, userdir, DATA_DIR.parent, *cli)
    proc = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(out), *argv],
        cwd=workdir,
        env=loopback_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0 or "STRATEGY SUMMARY" not in proc.stdout:
        raise SystemExit(f"backtest failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    stats = pstats.Stats(str(out))
    rows: dict[str, Row] = {}
    for (file, line, name), (_, calls, own, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        ours = any(part in file for part in OURS)
        if ours or name in FREQTRADE_HOOKS:
            short = file.split("/site-packages/")[-1].split("/work/main/")[-1]
            rows[f"{short}:{line} {name}"] = (calls, own, cum)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reviews", choices=("on", "off"), default="on")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    cli = ["--cache", "none", "--export", "none", "--timeframe-detail", "1m"]
    review = {"exit_review": {"enabled": args.reviews == "on"}}
    with tempfile.TemporaryDirectory() as tmp, start_emulator(port=0) as emulator:
        root = Path(tmp)
        journal = str(root / "journal.sqlite")
        record = {"journal_path": journal, "replay": {"on_miss": "call:rules"}, **review}
        overlay = offline_overlay(emulator.url, llm_oracle=record)
        recording = run_freqtrade(
            "backtesting", cli, workdir=root / "record", overlay=overlay, datadir=DATA_DIR.parent
        )
        assert recording.returncode == 0, recording.output[-3000:]
        replay = {"journal_path": journal, "replay": {"on_miss": "hold"}, **review}
        a = profiled_backtest(emulator.url, root / "replay", replay, cli)
        b = profiled_backtest(emulator.url, root / "disabled", {"enabled": False}, cli)
    print(
        f"{'replay cum s':>12} {'calls':>8} {'disabled cum s':>14} {'calls':>8} {'diff':>7}",
        "function",
    )
    keys = sorted(set(a) | set(b), key=lambda k: -(a.get(k, (0, 0, 0))[2] - b.get(k, (0, 0, 0))[2]))
    for key in keys[: args.top]:
        ca, _, ta = a.get(key, (0, 0.0, 0.0))
        cb, _, tb = b.get(key, (0, 0.0, 0.0))
        print(f"{ta:12.2f} {ca:8d} {tb:14.2f} {cb:8d} {ta - tb:7.2f}  {key}")


if __name__ == "__main__":
    main()
