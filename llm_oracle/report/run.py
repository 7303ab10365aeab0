"""`llm-oracle report`: run the backtests in Freqtrade's interpreter, build and write the report.

The variants are selected through an overlay of the `llm_oracle` block, as `record` does: the
strategy and the money rules stay exactly as configured. A report never pays for a decision:
a miss policy that would call Gemini answers `hold` instead (and the misses are shown); the
free `rules` backend may still record its misses, as every backtest of the shipped config does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llm_oracle.config import BackendName, OracleConfig, OracleConfigError, load_config
from llm_oracle.record.files import load_freqtrade_config
from llm_oracle.report.build import Report, build_report
from llm_oracle.report.render_html import render_html
from llm_oracle.report.render_md import headline, render_md
from llm_oracle.report.spec import ExtraVariant, RunnerOutput, RunSpec

# Run as a script by Freqtrade's interpreter: locating it imports only the (empty) package.
RUNNER = Path(str(importlib.util.find_spec("llm_oracle_ft.report_runner").origin))


def oracle_overlay(config: OracleConfig, source: BackendName) -> dict[str, Any]:
    """Replay of `source`, with a miss policy that never pays."""
    on_miss = "hold"
    if config.backend is BackendName.REPLAY and config.replay.source is source:
        on_miss = config.replay.on_miss
    if on_miss.startswith("call:") and source is not BackendName.RULES:
        on_miss = "hold"
    return {
        "backend": BackendName.REPLAY.value,
        "replay": {"source": source.value, "on_miss": on_miss},
        "recording": False,
        "progress": False,
    }


def report_source(config: OracleConfig, wanted: str | None) -> BackendName:
    if wanted is not None:
        source = BackendName(wanted)
    elif config.backend in (BackendName.REPLAY, BackendName.VARIANT):
        source = config.replay.source
    else:
        source = config.backend
    if source in (BackendName.REPLAY, BackendName.VARIANT):
        raise SystemExit(f"llm-oracle report: --source must be a deciding backend, not {source}")
    return source


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="report", unit="step", file=sys.stderr)


def run_backtests(spec: RunSpec, workdir: Path, log_path: Path) -> RunnerOutput:
    spec_path, out_path = workdir / "spec.json", workdir / "runner-output.json"
    spec_path.write_text(spec.model_dump_json(), encoding="utf-8")
    bar = None
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, str(RUNNER), str(spec_path), str(out_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("@@total "):
                bar = _progress_bar(int(line.split()[1]))
            elif line.startswith("@@step ") and bar is not None:
                bar.set_postfix_str(line.split(maxsplit=1)[1].strip(), refresh=False)
                bar.update(1)
            else:
                log.write(line)
        code = proc.wait()
    if bar is not None:
        bar.close()
    if code != 0 or not out_path.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise SystemExit(
            f"llm-oracle report: the Freqtrade runner failed ({code}); log {log_path}:\n"
            + "\n".join(tail)
        )
    return RunnerOutput.model_validate_json(out_path.read_text(encoding="utf-8"))


def cmd_report(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    raw = load_freqtrade_config(args.config)
    try:
        config = load_config(raw.get("llm_oracle"))
    except OracleConfigError as exc:
        raise SystemExit(f"llm-oracle report: {exc}") from None
    if not config.enabled:
        raise SystemExit("llm-oracle report: llm_oracle.enabled is false: there is no oracle")
    source = report_source(config, args.source)
    user_data = Path(args.userdir or raw.get("user_data_dir") or "user_data")
    name = args.name or f"{source.value}-{(args.timerange or 'all').replace('-', '_')}"
    outdir = user_data / "reports" / name
    outdir.mkdir(parents=True, exist_ok=True)
    seeds = config.report.placebo_seeds if args.seeds is None else args.seeds
    with tempfile.TemporaryDirectory(prefix="llm-oracle-report-") as tmp:
        workdir = Path(tmp)
        overlay_path = workdir / "report-overlay.json"
        oracle_block = oracle_overlay(config, source)
        overlay = {"llm_oracle": oracle_block}
        overlay_path.write_text(json.dumps(overlay, indent=1), encoding="utf-8")
        ft_args: list[str] = []
        for path in (*args.config, overlay_path):
            ft_args += ["--config", str(path)]
        if args.timerange:
            ft_args += ["--timerange", args.timerange]
        if args.userdir:
            for sub in ("backtest_results", "logs", "data"):
                (Path(args.userdir) / sub).mkdir(parents=True, exist_ok=True)
            ft_args += ["--userdir", str(args.userdir)]
        if args.datadir:
            ft_args += ["--datadir", str(args.datadir)]
        ft_args += ["--cache", "none", "--export", "none"]
        if not args.no_protections:
            ft_args.append("--enable-protections")
        ft_args += list(args.freqtrade_args)
        spec = RunSpec(
            freqtrade_args=ft_args,
            workdir=str(workdir / "tables"),
            placebo_seeds=seeds,
            horizon_candles=config.report.horizon_candles,
            ledger=not args.no_ledger,
            review_miss=config.variant.review_miss.value
            if source is not BackendName.RULES
            else "rules",
            check_identity=args.check_identity,
            workers=args.workers,
            extra=[ExtraVariant(name=n, table=str(p)) for n, p in args.variant or []],
        )
        print(
            f"llm-oracle report: {source.value} decisions, {seeds} placebo backtests, "
            f"{args.workers} worker(s); freqtrade backtesting {' '.join(ft_args)}",
            file=sys.stderr,
            flush=True,
        )
        output = run_backtests(spec, workdir, outdir / "freqtrade.log")
    journal = config.resolved_journal_path(user_data)
    report = build_report(name, output, config, journal)
    report.settings["on_miss"] = oracle_block["replay"]["on_miss"]
    report.seconds["total"] = time.perf_counter() - started
    write_report(report, outdir, output)
    print(headline(report))
    print(f"verdict: {report.verdict}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    print(f"report: {outdir / 'report.md'}, {outdir / 'report.html'}, {outdir / 'report.json'}")
    print(f"took {report.seconds['total']:.1f} s")
    return 0


def write_report(report: Report, outdir: Path, output: RunnerOutput) -> None:
    (outdir / "report.json").write_text(report.model_dump_json(indent=1), encoding="utf-8")
    (outdir / "ledger.json").write_text(
        json.dumps([c.model_dump(mode="json") for c in output.candidates]), encoding="utf-8"
    )
    (outdir / "report.md").write_text(render_md(report), encoding="utf-8")
    (outdir / "report.html").write_text(render_html(report), encoding="utf-8")
