"""`llm-oracle` command line: inspect the journal and check a config without starting Freqtrade.

Configs are merged like Freqtrade's: repeated `--config` files, later ones deep-merged over earlier.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from llm_oracle.config import OracleConfig, OracleConfigError, load_config
from llm_oracle.journal import Journal, JournalError


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_freqtrade_config(paths: list[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            merged = deep_merge(merged, json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"llm-oracle: cannot read config {path}: {exc}") from None
    return merged


def _oracle_config(args: argparse.Namespace) -> tuple[OracleConfig, Path]:
    raw = load_freqtrade_config(args.config)
    try:
        cfg = load_config(raw.get("llm_oracle"))
    except OracleConfigError as exc:
        raise SystemExit(f"llm-oracle: {exc}") from None
    user_data = Path(args.userdir or raw.get("user_data_dir") or "user_data")
    return cfg, cfg.resolved_journal_path(user_data)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def cmd_stats(args: argparse.Namespace) -> int:
    _, path = _oracle_config(args)
    try:
        journal = Journal(path, create=False)
    except JournalError as exc:
        print(f"llm-oracle: {exc}", file=sys.stderr)
        return 2
    with journal:
        rows = journal.query(
            "SELECT backend, model, substr(created_at, 1, 10), error_kind, prompt_tokens, "
            "output_tokens, thinking_tokens, cost_usd, latency_ms FROM decisions"
        )
    print(f"journal {path}: {len(rows)} rows")
    groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault((f"{row[0]}/{row[1]}", "all days"), []).append(row)
        groups.setdefault((f"{row[0]}/{row[1]}", str(row[2])), []).append(row)
    header = (
        f"{'backend/model':<28}{'day':<12}{'decisions':>10}{'errors':>8}{'tokens':>10}"
        f"{'USD':>10}{'p50 ms':>9}{'p95 ms':>9}"
    )
    print(header)
    for (name, day), items in sorted(groups.items()):
        ok = [r for r in items if r[3] is None]
        latencies = sorted(float(r[8]) for r in items)
        tokens = sum(int(r[4]) + int(r[5]) + int(r[6]) for r in items)
        print(
            f"{name:<28}{day:<12}{len(ok):>10}{len(items) - len(ok):>8}{tokens:>10}"
            f"{sum(float(r[7]) for r in items):>10.4f}{_percentile(latencies, 50):>9.1f}"
            f"{_percentile(latencies, 95):>9.1f}"
        )
    errors: dict[str, int] = {}
    for row in rows:
        if row[3] is not None:
            errors[str(row[3])] = errors.get(str(row[3]), 0) + 1
    print("errors by kind:", ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg, path = _oracle_config(args)
    print(f"llm_oracle config OK: backend {cfg.backend.value}, journal {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-oracle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("stats", cmd_stats, "calls, errors, tokens, USD and latency from the journal"),
        ("check-config", cmd_check_config, "validate the llm_oracle block"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", "-c", action="append", type=Path, required=True)
        p.add_argument("--userdir", type=Path, default=None)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
