"""`llm-oracle` command line: record decisions over history, inspect the journal, check a config.

Configs are merged like Freqtrade's: repeated `--config` files, later ones deep-merged over earlier.
A thin dispatcher: `record` lives in `llm_oracle.record` (see `record.command`). A new command is
one `add_<name>_command(sub, common)` call in `build_parser`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from llm_oracle import risk, startup_checks
from llm_oracle.backends import build_backend
from llm_oracle.config import OracleConfig, OracleConfigError, load_config
from llm_oracle.journal import Journal, JournalError, ReservationState, check_journal
from llm_oracle.models import CONTENT_ERROR_KINDS
from llm_oracle.record.command import add_record_command, record_overlay
from llm_oracle.record.files import deep_merge, freqtrade_executable, load_freqtrade_config
from llm_oracle.report.cli import add_report_command

__all__ = [
    "build_parser",
    "deep_merge",
    "freqtrade_executable",
    "load_freqtrade_config",
    "main",
    "record_overlay",
]


def _oracle_config(
    args: argparse.Namespace, overlay: dict[str, Any] | None = None
) -> tuple[OracleConfig, Path]:
    raw = load_freqtrade_config(args.config)
    block = raw.get("llm_oracle")
    if overlay is not None:
        block = deep_merge(block if isinstance(block, dict) else {}, overlay)
    try:
        cfg = load_config(block)
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


_STATS_SQL = (
    "SELECT backend, model, substr(created_at, 1, 10), error_kind, prompt_tokens, output_tokens, "
    "thinking_tokens, cached_tokens, cost_usd, latency_ms, attempts FROM decisions"
)


def cmd_stats(args: argparse.Namespace) -> int:
    cfg, path = _oracle_config(args)
    try:
        journal = Journal(path, create=False)
    except JournalError as exc:
        print(f"llm-oracle: {exc}", file=sys.stderr)
        return 2
    with journal:
        rows = journal.query(_STATS_SQL)
        served = journal.query(_SERVED_SQL)
        unanswerable = journal.query(_UNANSWERABLE_SQL, (*CONTENT_ERROR_KINDS,))
        reserved = journal.reservations()
    answers = sum(1 for r in rows if r[3] is None)
    print(f"journal {path}: {len(rows)} rows, {answers} answers, {len(rows) - answers} failed")
    groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault((f"{row[0]}/{row[1]}", "all days"), []).append(row)
        groups.setdefault((f"{row[0]}/{row[1]}", str(row[2])), []).append(row)
    print(
        f"{'backend/model':<34}{'day':<12}{'answers':>8}{'failed':>7}{'requests':>9}"
        f"{'tokens':>11}{'cached':>9}{'USD':>10}{'p50 ms':>9}{'p95 ms':>9}"
    )
    for (name, day), items in sorted(groups.items()):
        ok = sum(1 for r in items if r[3] is None)
        # Latency of real calls only: local refusals (budget, circuit) answer in no time.
        latencies = sorted(float(r[9]) for r in items if int(r[10]) > 0)
        tokens = sum(int(r[4]) + int(r[5]) + int(r[6]) for r in items)
        print(
            f"{name:<34}{day:<12}{ok:>8}{len(items) - ok:>7}{sum(int(r[10]) for r in items):>9}"
            f"{tokens:>11}{sum(int(r[7]) for r in items):>9}"
            f"{sum(float(r[8]) for r in items):>10.4f}{_percentile(latencies, 50):>9.1f}"
            f"{_percentile(latencies, 95):>9.1f}"
        )
    by_model: dict[str, dict[str, int]] = {}
    for row in rows:
        if row[3] is not None:
            kinds = by_model.setdefault(f"{row[0]}/{row[1]}", {})
            kinds[str(row[3])] = kinds.get(str(row[3]), 0) + 1
    totals: dict[str, int] = {}
    for kinds in by_model.values():
        for kind, n in kinds.items():
            totals[kind] = totals.get(kind, 0) + n
    print("errors by kind:", _kinds(totals))
    for name, kinds in sorted(by_model.items()):
        print(f"  {name}: {_kinds(kinds)}")
    # Which model really answered (modelVersion); another one than configured is a mismatch.
    answered: dict[str, dict[str, int]] = {}
    for backend, model, version, n in served:
        answered.setdefault(f"{backend}/{model}", {})[str(version)] = int(n)  # type: ignore[call-overload]
    for name, versions in sorted(answered.items()):
        print(f"answered by: {name}: {_kinds(versions)}")
    limit = cfg.gemini.max_invalid_answers
    stuck = sum(1 for (n,) in unanswerable if int(n) >= limit)  # type: ignore[call-overload]
    print(
        f"unanswerable questions (>= {limit} unusable answers, none usable): {stuck}; "
        f"questions with unusable answers: {len(unanswerable)}"
    )
    _print_requests(rows, reserved)
    print("cache hits are not journaled: see the 'oracle: ...' line a backtest prints")
    return 0


_SERVED_SQL = (
    "SELECT backend, model, model_version, COUNT(*) FROM decisions "
    "WHERE model_version IS NOT NULL GROUP BY backend, model, model_version"
)
_UNANSWERABLE_SQL = (
    "SELECT COUNT(*) FROM decisions d WHERE error_kind IN ({}) AND NOT EXISTS "
    "(SELECT 1 FROM decisions a WHERE a.key = d.key AND a.error_kind IS NULL) GROUP BY key"
).format(",".join("?" * len(CONTENT_ERROR_KINDS)))


def _print_requests(
    rows: list[tuple[Any, ...]], reserved: list[tuple[str, str, int, int, float]]
) -> None:
    """Every request sent, also those whose answer is not a decision row: answers that lost a
    race to another process, and reservations of processes that ended before recording."""
    journaled = sum(int(r[10]) for r in rows)
    lost = [r for r in reserved if r[1] == ReservationState.UNRECORDED.value]
    open_ = [r for r in reserved if r[1] == ReservationState.OPEN.value]
    lost_calls, open_calls = sum(r[3] for r in lost), sum(r[3] for r in open_)
    print(
        f"requests sent: {journaled + lost_calls + open_calls} in total: {journaled} with their "
        f"decision rows, {lost_calls} for answers another process had recorded first "
        f"(${sum(r[4] for r in lost):.4f}, {sum(r[2] for r in lost)} answers), {open_calls} "
        "reserved and never recorded (in flight now, or their process ended: may have been sent)"
    )


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def cmd_check_config(args: argparse.Namespace) -> int:
    """Everything startup validates, in one pass: the llm_oracle block (and the backend it
    builds), the money_rules block, the hard stoploss, the REST API's secrets and the journal
    file. Every problem is listed."""
    # Freqtrade merges FREQTRADE__SECTION__KEY variables over the files; the shipped setup sets
    # the API's secrets only there, so without them this would check another config.
    raw = deep_merge(load_freqtrade_config(args.config), startup_checks.freqtrade_env_overrides())
    problems: list[str] = []
    report: list[str] = []
    # Without a config `stoploss` the strategy's own (-0.05, in bounds) is in force.
    if "stoploss" in raw:
        try:
            startup_checks.check_hard_stoploss(raw["stoploss"])
            report.append(f"stoploss {raw['stoploss']} OK")
        except OracleConfigError as exc:
            problems.append(str(exc))
    try:
        # Checked whatever the run mode: a dry-run or live bot with this config would refuse it.
        startup_checks.check_api_server(raw.get("api_server"))
    except OracleConfigError as exc:
        problems.append(f"{exc} (a dry-run or live bot refuses to start)")
    cfg: OracleConfig | None = None
    try:
        cfg = load_config(raw.get("llm_oracle"))
        build_backend(cfg)  # what bot_start builds (no network, no key needed)
        report.append(f"llm_oracle OK: backend {cfg.backend.value}")
    except OracleConfigError as exc:
        problems.append(str(exc))
    try:
        risk.load_money_rules(raw.get("money_rules"))
        report.append("money_rules OK")
    except OracleConfigError as exc:
        problems.append(str(exc))
    if cfg is not None and cfg.enabled:
        user_data = Path(args.userdir or raw.get("user_data_dir") or "user_data")
        path = cfg.resolved_journal_path(user_data)
        try:
            report.append(check_journal(path))
        except JournalError as exc:
            problems.append(f"invalid 'llm_oracle' journal_path: {exc}")
    elif cfg is not None:
        report.append("llm_oracle disabled: no journal is opened")
    if problems:
        print("\n".join(f"llm-oracle: {p}" for p in problems), file=sys.stderr)
        return 1
    print("config OK: " + "; ".join(report))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", action="append", type=Path, required=True)
    p.add_argument("--userdir", type=Path, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-oracle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("stats", cmd_stats, "calls, errors, tokens, USD and latency from the journal"),
        (
            "check-config",
            cmd_check_config,
            "validate what startup validates: llm_oracle, money_rules, the journal",
        ),
    ):
        p = sub.add_parser(name, help=text)
        _common(p)
        p.set_defaults(func=func)
    add_record_command(sub, _common)
    add_report_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
