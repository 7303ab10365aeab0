"""`llm-oracle` command line: record decisions over history, inspect the journal, check a config.

Configs are merged like Freqtrade's: repeated `--config` files, later ones deep-merged over earlier.

`record` runs `freqtrade backtesting` as a subprocess (this package never imports Freqtrade) with
an extra overlay that turns the oracle into a recorder: replay from the journal, call the source
backend on a miss, progress bar on stderr. The journal commits every answer as it arrives, so an
interrupted recording (Ctrl-C, kill -9) re-run with the same arguments asks only what is missing.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from llm_oracle import risk
from llm_oracle.backends import build_backend
from llm_oracle.backends.gemini import API_KEY_ENV, api_key_from_env
from llm_oracle.config import BackendName, OracleConfig, OracleConfigError, load_config
from llm_oracle.journal import Journal, JournalError, check_journal
from llm_oracle.models import CONTENT_ERROR_KINDS


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


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def freqtrade_executable() -> str:
    """`freqtrade` of this interpreter's environment, else the first on PATH."""
    beside = Path(sys.executable).with_name("freqtrade")
    if beside.exists():
        return str(beside)
    found = shutil.which("freqtrade")
    if found is None:
        raise SystemExit("llm-oracle: no freqtrade executable next to Python or on PATH")
    return found


def record_overlay(config: OracleConfig) -> dict[str, Any]:
    """The `llm_oracle` settings that turn a backtest into a recording of the source backend."""
    source = config.replay.source if config.backend is BackendName.REPLAY else config.backend
    return {
        "backend": BackendName.REPLAY.value,
        "replay": {"source": source.value, "on_miss": f"call:{source.value}"},
        "recording": True,
        "progress": True,
    }


def _journal_mark(path: Path) -> int:
    if not path.exists():
        return 0
    with Journal(path, create=False) as journal:
        return int(journal.query("SELECT COALESCE(MAX(id), 0) FROM decisions")[0][0])  # type: ignore[arg-type]


def _recorded_since(path: Path, mark: int) -> str:
    if not path.exists():
        return "nothing recorded"
    with Journal(path, create=False) as journal:
        rows = journal.query(
            "SELECT error_kind, attempts, prompt_tokens + output_tokens + thinking_tokens, "
            "cost_usd FROM decisions WHERE id > ?",
            (mark,),
        )
    answers = sum(1 for r in rows if r[0] is None)
    errors: dict[str, int] = {}
    for row in rows:
        if row[0] is not None:
            errors[str(row[0])] = errors.get(str(row[0]), 0) + 1
    return (
        f"{answers} decisions recorded, {len(rows) - answers} failed ({_kinds(errors)}), "
        f"{sum(int(r[1]) for r in rows)} calls, {sum(int(r[2]) for r in rows)} tokens, "
        f"${sum(float(r[3]) for r in rows):.4f}"
    )


def cmd_record(args: argparse.Namespace) -> int:
    base, _ = _oracle_config(args)
    overlay = record_overlay(base)
    cfg, journal_path = _oracle_config(args, overlay)
    if cfg.replay.source is BackendName.GEMINI and api_key_from_env() is None:
        print(
            f"llm-oracle: recording Gemini needs an API key: set {' or '.join(API_KEY_ENV)}",
            file=sys.stderr,
        )
        return 2
    mark = _journal_mark(journal_path)
    with tempfile.TemporaryDirectory(prefix="llm-oracle-record-") as tmp:
        overlay_path = Path(tmp) / "record-overlay.json"
        overlay_path.write_text(json.dumps({"llm_oracle": overlay}, indent=1), encoding="utf-8")
        command = [freqtrade_executable(), "backtesting"]
        for path in (*args.config, overlay_path):
            command += ["--config", str(path)]
        command += ["--timerange", args.timerange, "--cache", "none", "--export", "none"]
        if args.userdir:
            # Freqtrade refuses a missing user directory; these are the parts a backtest needs.
            for sub in ("backtest_results", "logs", "data"):
                (Path(args.userdir) / sub).mkdir(parents=True, exist_ok=True)
            command += ["--userdir", str(args.userdir)]
        if args.datadir:
            command += ["--datadir", str(args.datadir)]
        command += list(args.freqtrade_args)
        print(f"llm-oracle record: {' '.join(command)}", file=sys.stderr, flush=True)
        proc = subprocess.Popen(command)
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # the child got the same Ctrl-C; let it finish its exit
            code = proc.wait()
            code = code or 130
    print(f"llm-oracle record: {_recorded_since(journal_path, mark)}; journal {journal_path}")
    if code != 0:
        print(
            f"llm-oracle record: freqtrade exited with {code}; run the same command again to "
            "continue (answers already recorded are not asked again)",
            file=sys.stderr,
        )
    return code


def cmd_check_config(args: argparse.Namespace) -> int:
    """Everything startup validates, in one pass: the llm_oracle block (and the backend it
    builds), the money_rules block, and the journal file. Every problem is listed."""
    raw = load_freqtrade_config(args.config)
    problems: list[str] = []
    report: list[str] = []
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
        ("record", cmd_record, "record the source backend's decisions over a timerange"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", "-c", action="append", type=Path, required=True)
        p.add_argument("--userdir", type=Path, default=None)
        p.set_defaults(func=func)
        if name == "record":
            p.add_argument("--timerange", required=True, type=_timerange, help="YYYYMMDD-YYYYMMDD")
            p.add_argument("--datadir", type=Path, default=None)
            p.add_argument(
                "freqtrade_args", nargs="*", help="after --: passed to freqtrade backtesting"
            )
    return parser


def _timerange(value: str) -> str:
    if not re.fullmatch(r"(\d{8})?-(\d{8})?", value) or value == "-":
        raise argparse.ArgumentTypeError(f"{value!r} is not YYYYMMDD-YYYYMMDD")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
