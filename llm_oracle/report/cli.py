"""The `report` subcommand: `add_report_command(subparsers)` wires it into `llm-oracle`."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from llm_oracle.report.run import cmd_report


def _timerange(value: str) -> str:
    if not re.fullmatch(r"(\d{8})?-(\d{8})?", value) or value == "-":
        raise argparse.ArgumentTypeError(f"{value!r} is not YYYYMMDD-YYYYMMDD")
    return value


def _variant(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not re.fullmatch(r"[a-z0-9_-]+", name):
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=TABLE.json")
    return name, Path(path)


def add_report_command(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="is the oracle worth its cost? variants, placebo, veto ledger, cost, memorisation",
        description=(
            "Backtest the recorded decisions against the pre-filter alone, placebo seeds and the "
            "oracle inverted (real Freqtrade backtests), value every candidate (veto ledger), "
            "charge the API bill, and write user_data/reports/<name>/report.{md,html,json}."
        ),
    )
    p.add_argument("--config", "-c", action="append", type=Path, required=True)
    p.add_argument("--userdir", type=Path, default=None)
    p.add_argument("--datadir", type=Path, default=None)
    p.add_argument("--timerange", type=_timerange, default=None, help="YYYYMMDD-YYYYMMDD")
    p.add_argument(
        "--source",
        choices=["rules", "gemini"],
        default=None,
        help="whose recorded decisions to judge (default: the replay source)",
    )
    p.add_argument("--name", default=None, help="report directory name")
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="placebo backtests (default: llm_oracle.report.placebo_seeds)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=max(1, os.cpu_count() or 1),
        help="processes for the variants' backtests (default: the CPU count)",
    )
    p.add_argument("--no-protections", action="store_true", help="backtest without protections")
    p.add_argument(
        "--check-identity",
        action="store_true",
        help="also backtest the recorded decisions as a variant table (must equal the replay)",
    )
    p.add_argument("--no-ledger", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", action="append", type=_variant, help=argparse.SUPPRESS)
    p.add_argument("freqtrade_args", nargs="*", help="after --: passed to freqtrade backtesting")
    p.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llm-oracle")
    add_report_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))
