"""Freqtrade side of `llm-oracle report`: a script run by Freqtrade's interpreter, never imported.

    python -m llm_oracle_ft.report_runner SPEC.json OUT.json   (or the file's path)

It builds Freqtrade's own `Backtesting` from the `freqtrade backtesting` arguments in the spec
and loads the data and computes the indicators once. Then:
1. every candidate of the range: its request and key, built exactly as the strategy builds
   them, and the source's recorded decision (a replay that records its misses records them);
2. the variants' decision tables, from those decisions only;
3. every variant as a real backtest of the unchanged strategy, each with a fresh strategy
   instance whose `llm_oracle` block selects it (the oracle: the configured replay; identity,
   pre-filter alone, inverted, placebo seeds, extra tables: the `variant` backend), in this
   process and `workers - 1` forked ones, the way hyperopt runs its epochs;
4. last, the veto ledger: the candles after each candidate (evaluation only).
Progress goes to stdout as `@@total N` and `@@step label` lines; the result to OUT.json.

It reaches into private parts in four places (`Backtesting._set_strategy`, the strategy's
`_oracle` and `_entry_requests`, and its `money` rules): this is evaluation plumbing for this
project's strategy, not a general Freqtrade tool.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from freqtrade.commands import Arguments
from freqtrade.commands.optimize_commands import setup_optimize_configuration
from freqtrade.data import history
from freqtrade.data.converter import trim_dataframes
from freqtrade.enums import RunMode
from freqtrade.optimize.backtesting import Backtesting
from freqtrade.resolvers import StrategyResolver
from freqtrade.util import get_dry_run_wallet

from llm_oracle.backends.variants import SourceIdentity
from llm_oracle.journal import Journal
from llm_oracle.models import OracleDecision, Purpose, Side
from llm_oracle.report import variants
from llm_oracle.report.ledger import value_candidate
from llm_oracle.report.spec import (
    Candidate,
    RunnerOutput,
    RunSpec,
    TradeRow,
    VariantRun,
)


def _total(steps: int) -> None:
    print(f"@@total {steps}", flush=True)


def _step(label: str) -> None:
    # One short line per finished step: atomic on a pipe, also from the forked workers.
    print(f"@@step {label}", flush=True)


def _trades(frame: Any) -> list[TradeRow]:
    if frame is None or len(frame) == 0:
        return []
    rows = []
    for t in frame.to_dict("records"):
        rows.append(
            TradeRow(
                pair=t["pair"],
                open_date=t["open_date"].to_pydatetime(),
                close_date=t["close_date"].to_pydatetime(),
                is_short=bool(t["is_short"]),
                profit_abs=float(t["profit_abs"]),
                profit_ratio=float(t["profit_ratio"]),
                exit_reason=str(t["exit_reason"]),
                enter_tag=str(t.get("enter_tag") or ""),
                leverage=float(t.get("leverage") or 1.0),
            )
        )
    return rows


class Runner:
    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        args = Arguments(["backtesting", *spec.freqtrade_args]).get_parsed_arg()
        self.config = setup_optimize_configuration(args, RunMode.BACKTEST)
        self.bt = Backtesting(self.config)
        self.bt.progress = None  # our own progress; Freqtrade's bars would fight it
        data, timerange = self.bt.load_bt_data()
        self.base = self.bt.strategylist[0]
        self.bt._set_strategy(self.base)
        self.indicators = self.base.advise_all_indicators(data)
        trimmed = trim_dataframes(self.indicators, timerange, self.bt.required_startup)
        self.start, self.end = history.get_timerange(trimmed)

    def strategy(self, block: dict[str, Any]) -> Any:
        config = copy.deepcopy(self.config)
        config["llm_oracle"] = block
        return StrategyResolver.load_strategy(config)

    def backtest(self, strategy: Any, asked: set[str] | None) -> tuple[Any, dict[str, Any]]:
        self.bt._set_strategy(strategy)  # ft_bot_start: the strategy opens its oracle
        if asked is not None:
            _observe(strategy._oracle, asked)
        processed = {pair: frame.copy() for pair, frame in self.indicators.items()}
        return strategy, self.bt.backtest(processed, self.start, self.end)

    def run_variant(
        self,
        name: str,
        kind: str,
        strategy: Any,
        seed: int | None = None,
        asked: set[str] | None = None,
    ) -> tuple[VariantRun, Any]:
        started = time.perf_counter()
        strategy, result = self.backtest(strategy, asked)
        oracle = strategy._oracle
        counters: dict[str, float] = {}
        if oracle is not None:
            s = oracle.stats
            counters = {
                "candidates": s.requests - s.exit_reviews,
                "exit_reviews": s.exit_reviews,
                "journal_hits": s.journal_hits,
                "misses": s.misses,
                "review_misses": s.review_misses,
                "unanswerable": s.unanswerable,
                "backend_calls": s.backend_calls,
                "recorded": s.recorded,
                "cost_usd": s.cost_usd,
            }
            backend = oracle.backend
            for name_ in ("entry_hits", "entry_misses", "review_hits", "review_misses"):
                if hasattr(backend, name_):
                    counters[f"variant_{name_}"] = getattr(backend, name_)
        run = VariantRun(
            name=name,
            kind=kind,
            seed=seed,
            trades=_trades(result["results"]),
            final_balance=float(result["final_balance"]),
            seconds=time.perf_counter() - started,
            oracle=counters,
        )
        return run, strategy

    # --- candidates, their keys and the source's decisions ---------------------------------
    def candidates(self, strategy: Any) -> list[tuple[Candidate, int]]:
        oracle = strategy._oracle
        found: list[tuple[Candidate, int]] = []
        requests = []
        for pair, frame in self.indicators.items():
            analysed = strategy.ft_advise_signals(frame.copy(), {"pair": pair})
            marks = analysed["candidate"].to_numpy()
            rows = [r for r in np.flatnonzero(marks).tolist() if r >= strategy.startup_candle_count]
            sides = [Side.LONG if marks[r] > 0 else Side.SHORT for r in rows]
            asked = strategy._entry_requests(oracle, analysed, rows, sides, pair)
            dates = analysed["date"]
            for row, request in asked:
                key = oracle.key_for(request)
                requests.append(key)
                found.append(
                    (
                        Candidate(
                            pair=pair,
                            date=dates.iat[row].to_pydatetime(),
                            side=request.candidate,
                            key=key,
                            decision=None,
                        ),
                        row,
                    )
                )
        answers = oracle.journal.lookup(requests)
        return [(c.model_copy(update={"decision": answers.get(c.key)}), row) for c, row in found]

    def reviews(self, strategy: Any) -> dict[str, OracleDecision]:
        ident = strategy._oracle.backend.identity
        with Journal(strategy._oracle.journal.path, create=False) as journal:
            rows = journal.query(
                "SELECT key, decision_json FROM decisions WHERE purpose = ? AND error_kind IS "
                "NULL AND backend = ? AND model = ? AND prompt_version = ? AND settings = ?",
                (
                    Purpose.EXIT_REVIEW.value,
                    ident.name,
                    ident.model,
                    ident.prompt_version,
                    ident.settings,
                ),
            )
        out = {}
        for key, text in rows:
            try:
                out[str(key)] = OracleDecision.model_validate_json(str(text))
            except ValueError:
                continue  # an answer that no longer validates is a miss, as in replay
        return out

    def value(self, found: list[tuple[Candidate, int]]) -> list[Candidate]:
        rules = self.base.money
        out = []
        for candidate, row in found:
            frame = self.indicators[candidate.pair]
            outcome = value_candidate(
                candidate.side,
                row,
                frame["open"].to_numpy(dtype=float),
                frame["high"].to_numpy(dtype=float),
                frame["low"].to_numpy(dtype=float),
                frame["close"].to_numpy(dtype=float),
                float(frame["atr"].iat[row]),
                rules=rules,
                fee=float(self.bt.fee),
                hard_stoploss=float(self.base.stoploss),
                horizon=self.spec.horizon_candles,
            )
            out.append(candidate.model_copy(update={"ledger": outcome}))
        return out


def _observe(oracle: Any, asked: set[str]) -> None:
    """Collect the keys of every question the oracle is asked (what the API bill covers).

    Observation only: the wrapped call is the oracle's own, with the same arguments.
    """
    decide_many = oracle.decide_many

    def observed(requests: Any) -> Any:
        asked.update(oracle.key_for(r) for r in requests)
        return decide_many(requests)

    oracle.decide_many = observed


def main(spec_path: str, out_path: str) -> int:
    spec = RunSpec.model_validate_json(Path(spec_path).read_text(encoding="utf-8"))
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    _total(3 + 3 + int(spec.check_identity) + spec.placebo_seeds + len(spec.extra))
    runner = Runner(spec)
    seconds["load"] = time.perf_counter() - t0
    _step("data and indicators")

    # Every candidate's request, key and recorded decision, asked exactly as the strategy asks
    # (a replay that records its misses records them here); then the tables, from those only.
    t = time.perf_counter()
    block = runner.config.get("llm_oracle") or {}
    found = runner.candidates(runner.base)
    reviews = runner.reviews(runner.base)
    source = SourceIdentity.of(runner.base._oracle.backend.identity)
    min_confidence = float(runner.base.min_confidence.value)
    recorded = int(runner.base._oracle.stats.recorded)
    runner.base.ft_bot_cleanup()  # no thread and no open journal when the workers fork
    candidates = [c for c, _ in found]
    tables = [("identity", "identity", None, variants.identity(source, candidates, reviews))]
    tables = tables if spec.check_identity else []
    tables += [
        (
            "prefilter",
            "prefilter",
            None,
            variants.prefilter(source, candidates, reviews, min_confidence),
        ),
        (
            "inverted",
            "inverted",
            None,
            variants.inverted(source, candidates, reviews, min_confidence),
        ),
    ]
    tables += [
        (f"placebo-{seed}", "placebo", seed, variants.placebo(source, candidates, reviews, seed))
        for seed in range(spec.placebo_seeds)
    ]
    workdir = Path(spec.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    jobs: list[Job] = [("oracle", "oracle", None, None)]
    jobs += [(n, k, seed, table.write(workdir / f"{n}.json")) for n, k, seed, table in tables]
    jobs += [(e.name, "extra", None, Path(e.table)) for e in spec.extra]
    seconds["candidates"] = time.perf_counter() - t
    _step("candidates and tables")

    t = time.perf_counter()
    runs = _run_jobs(runner, block, jobs, spec, workdir)
    seconds["backtests"] = time.perf_counter() - t
    # The ledger last: it reads the candles after each candidate, when every request is asked.
    t = time.perf_counter()
    if spec.ledger:
        candidates = runner.value(found)
    seconds["ledger"] = time.perf_counter() - t
    _step("ledger")
    oracle_run = runs[0]
    identity = next((r for r in runs if r.kind == "identity"), None)
    output = RunnerOutput(
        start=runner.start,
        end=runner.end,
        timeframe=str(runner.config["timeframe"]),
        stake_currency=str(runner.config["stake_currency"]),
        wallet=float(get_dry_run_wallet(runner.config)),
        risk_equity=float(runner.bt.starting_balance),
        recorded=recorded,
        fee=float(runner.bt.fee),
        min_confidence=min_confidence,
        risk_per_trade=float(runner.base.money.risk_per_trade),
        source_backend=source.name,
        source_model=source.model,
        pairs=list(runner.indicators),
        candidates=candidates,
        asked_keys=oracle_run.asked,
        variants=runs,
        identity_matches_oracle=None if identity is None else identity.trades == oracle_run.trades,
        seconds=seconds,
    )
    Path(out_path).write_text(output.model_dump_json(), encoding="utf-8")
    return 0


Job = tuple[str, str, int | None, Path | None]  # name, kind, seed, table


def _run_one(runner: Runner, block: dict[str, Any], job: Job, review_miss: str) -> VariantRun:
    name, kind, seed, path = job
    if path is None:  # the oracle: the configured replay, its questions observed for the bill
        asked: set[str] = set()
        run, strategy = runner.run_variant(name, kind, runner.strategy(block), asked=asked)
        run = run.model_copy(update={"asked": sorted(asked)})
    else:
        variant_block = {
            **block,
            "backend": "variant",
            "progress": False,
            "variant": {"table": str(path), "review_miss": review_miss},
        }
        run, strategy = runner.run_variant(name, kind, runner.strategy(variant_block), seed)
    strategy.ft_bot_cleanup()  # closes its oracle: thread, journal
    _step(name)
    return run


def _run_jobs(
    runner: Runner, block: dict[str, Any], jobs: list[Job], spec: RunSpec, workdir: Path
) -> list[VariantRun]:
    """The variants' backtests, split over `spec.workers` processes forked from this one.

    Forked after the data and indicators are loaded and every oracle is closed (no thread, no
    open journal), so a worker starts at once; each opens its own strategies and journals.
    """
    workers = max(1, min(spec.workers, len(jobs)))
    children: dict[int, tuple[int, Path]] = {}
    for w in range(1, workers):
        out = workdir / f"worker-{w}.json"
        pid = os.fork()
        if pid == 0:  # the worker: its share of the jobs, then exit without atexit hooks
            code = 1
            try:
                mine = [_run_one(runner, block, j, spec.review_miss) for j in jobs[w::workers]]
                out.write_text(json.dumps([r.model_dump(mode="json") for r in mine]))
                code = 0
            finally:
                sys.stdout.flush()
                os._exit(code)
        children[w] = (pid, out)
    results = {0: [_run_one(runner, block, j, spec.review_miss) for j in jobs[0::workers]]}
    for w, (pid, out) in children.items():
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise SystemExit(f"report worker {w} failed (wait status {status})")
        results[w] = [VariantRun.model_validate(r) for r in json.loads(out.read_text())]
    return [results[i % workers][i // workers] for i in range(len(jobs))]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
