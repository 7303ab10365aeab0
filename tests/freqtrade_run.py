"""Run the real `freqtrade` CLI as a subprocess against the Bybit emulator, and read its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.factories import ROOT

FREQTRADE = Path(sys.executable).with_name("freqtrade")


def offline_overlay(emulator_url: str, **extra: Any) -> dict[str, Any]:
    """The shipped offline overlay with the emulator's real (free) port substituted."""
    overlay = json.loads((ROOT / "user_data" / "config.offline.json").read_text())
    for section in ("ccxt_config", "ccxt_async_config"):
        overlay["exchange"][section]["urls"]["api"] = dict.fromkeys(
            overlay["exchange"][section]["urls"]["api"], emulator_url
        )
    for key, value in extra.items():
        overlay[key] = value
    return overlay


@dataclass
class FreqtradeRun:
    returncode: int
    output: str
    userdir: Path

    def result(self) -> dict[str, Any]:
        """The latest backtest result's strategy block."""
        results = self.userdir / "backtest_results"
        last = json.loads((results / ".last_result.json").read_text())["latest_backtest"]
        with zipfile.ZipFile(results / last) as archive:
            name = Path(last).with_suffix(".json").name
            data = json.loads(archive.read(name))
        return data["strategy"]["GeminiOracleStrategy"]

    def trades(self) -> list[tuple[Any, ...]]:
        keys = ("pair", "open_date", "close_date", "is_short", "open_rate", "close_rate")
        keys += ("amount", "enter_tag", "exit_reason", "profit_abs")
        return [tuple(t[k] for k in keys) for t in self.result()["trades"]]

    def oracle_summary(self) -> str:
        lines = [line for line in self.output.splitlines() if line.startswith("oracle: ")]
        assert lines, f"no oracle summary in output:\n{self.output[-3000:]}"
        return lines[-1]


def prepare_run(workdir: Path, overlay: dict[str, Any]) -> tuple[Path, Path]:
    """A fresh user_data directory and the overlay written next to it."""
    userdir = workdir / "user_data"
    for sub in ("backtest_results", "logs", "data"):
        (userdir / sub).mkdir(parents=True, exist_ok=True)
    overlay_path = workdir / "overlay.json"
    overlay_path.write_text(json.dumps(overlay, indent=1))
    return userdir, overlay_path


# Commands whose parser has no --strategy-path (they never load the strategy).
NO_STRATEGY_COMMANDS = frozenset({"download-data", "backtesting-analysis", "show-trades"})


def freqtrade_argv(
    command: str, overlay_path: Path, userdir: Path, datadir: Path | None, *args: str
) -> list[str]:
    """The real CLI: the shipped config.json, then the test's overlay, then the arguments."""
    argv = [str(FREQTRADE), command, "--config", str(ROOT / "config.json")]
    argv += ["--config", str(overlay_path), "--userdir", str(userdir)]
    if datadir is not None:
        argv += ["--datadir", str(datadir)]
    if command not in NO_STRATEGY_COMMANDS:
        argv += ["--strategy-path", str(ROOT / "strategies")]
    return [*argv, *args]


def loopback_env(**extra: str) -> dict[str, str]:
    """The environment without API keys (unless given) and with no proxy for loopback."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("GEMINI_API_KEY", None)
    env.pop("GOOGLE_API_KEY", None)
    return {**env, **extra}


def run_freqtrade(
    command: str,
    args: list[str],
    *,
    workdir: Path,
    overlay: dict[str, Any],
    datadir: Path,
    timeout: float = 600,
) -> FreqtradeRun:
    userdir, overlay_path = prepare_run(workdir, overlay)
    proc = subprocess.run(
        freqtrade_argv(command, overlay_path, userdir, datadir, *args),
        cwd=workdir,
        env=loopback_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return FreqtradeRun(proc.returncode, proc.stdout + proc.stderr, userdir)


def fees_paid(trade: dict[str, Any]) -> float:
    """Both fees of an exported trade in stake currency, at its real fill prices."""
    amount = trade["amount"]
    return amount * (
        trade["open_rate"] * trade["fee_open"] + trade["close_rate"] * trade["fee_close"]
    )
