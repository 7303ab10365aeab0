"""`llm-oracle record`: record the source backend's decisions over a timerange.

It runs `freqtrade backtesting` as a child process (this package never imports Freqtrade) with the
oracle turned into a recorder: replay from the journal, ask the source on a miss. In order:
1. merge the `--config` files like Freqtrade, apply record's own settings (replay, `call:<source>`,
   tier), then validate the merged `llm_oracle` block: an overlay that only names the source works;
2. start the offline Bybit emulator when the config points ccxt at one on 127.0.0.1 (reuse one
   that already answers there);
3. a counting pass (no request sent) gives the number of decisions and the expected cost
   (`--estimate` prints it and stops) and the total of the one progress bar;
4. the recording, stopped cleanly by SIGINT, SIGTERM or SIGHUP (and, through its lifeline, by
   the death of `record` itself): see `child`.
The journal commits every answer as it arrives, so the same command continues an interrupted
recording without asking an answered question again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from llm_oracle.backends.gemini import API_KEY_ENV, GeminiBackend, api_key_from_env
from llm_oracle.config import BackendName, GeminiTier, OracleConfig, OracleConfigError, load_config
from llm_oracle.journal import Caps, Journal
from llm_oracle.models import Purpose
from llm_oracle.progress import RunProgress
from llm_oracle.record.batch import BATCH_PRICE_FACTOR, BatchRecorder, Questions
from llm_oracle.record.child import Child
from llm_oracle.record.emulator import offline_emulator, offline_port, repoint
from llm_oracle.record.estimate import Counted, estimate
from llm_oracle.record.files import deep_merge, freqtrade_executable, load_freqtrade_config
from llm_oracle.record.link import QUESTIONS_ENV, RUN_ENV, RecordEvent, stop_grace_s

EXIT_OK = 0  # every question of the range has an answer
EXIT_FAILED = 1  # some decisions failed (errors, budget) or nothing could be recorded: run again
EXIT_USAGE = 2  # bad arguments or config, no API key
EXIT_FREQTRADE = 4  # freqtrade itself failed; its output says why
# Stopped by a signal: 128 + its number (130 Ctrl-C, 129 SIGHUP, 143 SIGTERM).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
BATCH_TIER = "batch"  # the Batch API: not a service tier of a synchronous call
MAX_BATCH_ROUNDS = 10  # each round asks what the previous round's answers newly raised
FLEX_TIMEOUT_S = 300.0  # flex answers take minutes; the longest timeout_s the config allows
# A counting child sends nothing: it only journals nothing and exits.
_COUNTING_GRACE_S = stop_grace_s(0.0)


def add_record_command(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("record", help="record the source backend's decisions over a timerange")
    common(p)
    p.set_defaults(func=cmd_record)
    p.add_argument("--timerange", required=True, type=_timerange, help="YYYYMMDD-YYYYMMDD")
    p.add_argument("--datadir", type=Path, default=None)
    p.add_argument(
        "--pairs", nargs="+", default=None, help="only these pairs (default: the config's)"
    )
    p.add_argument(
        "--source",
        choices=[BackendName.RULES.value, BackendName.GEMINI.value],
        default=None,
        help="whose decisions to record (default: the config's replay source or backend)",
    )
    p.add_argument(
        "--tier",
        choices=[*(t.value for t in GeminiTier), BATCH_TIER],
        default=None,
        help="Gemini tier: flex and batch are half price (minutes / up to 24 h of latency)",
    )
    p.add_argument(
        "--batch-poll-s",
        type=float,
        default=30.0,
        help="with --tier batch: seconds between looks at a running batch job",
    )
    p.add_argument(
        "--estimate",
        action="store_true",
        help="print the decisions to ask and the expected cost, send nothing, and stop",
    )
    p.add_argument(
        "--no-count",
        action="store_true",
        help="skip the counting pass (the progress bar then has no total and no ETA)",
    )
    p.add_argument("freqtrade_args", nargs="*", help="after --: passed to freqtrade backtesting")


def _timerange(value: str) -> str:
    import re

    if not re.fullmatch(r"(\d{8})?-(\d{8})?", value) or value == "-":
        raise argparse.ArgumentTypeError(f"{value!r} is not YYYYMMDD-YYYYMMDD")
    return value


def record_source(block: dict[str, Any], chosen: str | None = None) -> str:
    """The backend whose decisions are recorded, read from the raw (unvalidated) block."""
    if chosen:
        return chosen
    backend = block.get("backend", BackendName.REPLAY.value)
    if backend == BackendName.REPLAY.value:
        replay = block.get("replay") if isinstance(block.get("replay"), dict) else {}
        return str(replay.get("source", BackendName.RULES.value))  # type: ignore[union-attr]
    return str(backend)


def record_overlay(
    block: dict[str, Any],
    *,
    source: str | None = None,
    tier: str | None = None,
    counting: bool = False,
) -> dict[str, Any]:
    """The `llm_oracle` settings that turn a backtest into a recording of the source backend
    (`counting`: misses answered by the local rules, nothing sent)."""
    src = record_source(block, source)
    overlay: dict[str, Any] = {
        "backend": BackendName.REPLAY.value,
        "replay": {"source": src, "on_miss": "rules" if counting else f"call:{src}"},
        "recording": True,
        "progress": False,  # `record` draws the one bar
    }
    if tier is not None and tier != BATCH_TIER:
        overlay["gemini"] = {"tier": tier}
        if tier == GeminiTier.FLEX.value:
            overlay["timeout_s"] = FLEX_TIMEOUT_S
    return overlay


@dataclass
class _Run:
    code: int
    signum: int | None


class _Signals:
    """SIGINT/SIGTERM/SIGHUP while the child runs: remembered, never raised mid-cleanup."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for signum in _STOP_SIGNALS:
            self._old[signum] = signal.signal(signum, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old)


def _run_child(
    args: argparse.Namespace,
    config: dict[str, Any],
    grace_s: float,
    on_event: Callable[[RecordEvent], None],
    what: str,
    env: dict[str, str] | None = None,
) -> _Run:
    command = [freqtrade_executable(), "backtesting", "--config", "-"]
    command += ["--timerange", args.timerange, "--cache", "none", "--export", "none"]
    if args.userdir:
        # Freqtrade refuses a missing user directory; these are the parts a backtest needs.
        for sub in ("backtest_results", "logs", "data"):
            (Path(args.userdir) / sub).mkdir(parents=True, exist_ok=True)
        command += ["--userdir", str(args.userdir)]
    if args.datadir:
        command += ["--datadir", str(args.datadir)]
    if args.pairs:
        command += ["--pairs", *args.pairs]
    command += list(args.freqtrade_args)
    child = Child(command, config, on_event=on_event, env={**os.environ, **(env or {})})
    with _Signals() as signals:
        child.start()
        print(
            f"llm-oracle record: {what}: freqtrade pid {child.pid}: {' '.join(command)}",
            file=sys.stderr,
            flush=True,
        )
        try:
            code = None
            while code is None:
                if signals.event.wait(0.2):
                    break
                code = child.wait(0)
            if code is None:  # told to stop: the child stops calling, settles, exits
                print(
                    f"llm-oracle record: signal {signals.received[0]}: stopping freqtrade "
                    f"(pid {child.pid}): no new requests, up to {grace_s:.0f} s for the ones in "
                    "flight; a second signal kills it now",
                    file=sys.stderr,
                    flush=True,
                )
                child.release_lifeline()
                signals.event.clear()
                waited = 0.0
                while code is None and waited < grace_s and not signals.event.is_set():
                    code = child.wait(0.2)
                    waited += 0.2
                if code is None and signals.event.is_set():  # a second signal: no more grace
                    child.signal_group(signal.SIGKILL)
                    code = child.wait(5.0)
                    print(
                        f"llm-oracle record: second signal: freqtrade (pid {child.pid}) killed; "
                        "requests in flight were not journaled",
                        file=sys.stderr,
                        flush=True,
                    )
            code = child.stop(0) if code is None else code
        finally:
            child.stop(0)  # never leave the group behind, whatever happened here
        child.drain()
    signum = signals.received[0] if signals.received else None
    return _Run(code, signum)


def _merged(raw: dict[str, Any], block: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    return deep_merge(raw, {"llm_oracle": deep_merge(block, overlay)})


def _new_run() -> str:
    """An id for this run's decision rows (`Journal.run`): the summary counts them only."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Recorded:
    answers: int
    failed: int
    errors: dict[str, int]
    calls: int
    tokens: int
    usd: float

    def line(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"{self.answers} decisions recorded, {self.failed} failed ({kinds}), "
            f"{self.calls} calls, {self.tokens} tokens, ${self.usd:.4f}"
        )


def recorded_by(path: Path, run: str) -> Recorded:
    """What this run journaled (rows of other processes on the same journal left out)."""
    if not path.exists():
        return Recorded(0, 0, {}, 0, 0, 0.0)
    with Journal(path, create=False) as journal:
        rows = journal.query(
            "SELECT error_kind, attempts, prompt_tokens + output_tokens + thinking_tokens, "
            "cost_usd FROM decisions WHERE run = ?",
            (run,),
        )
    errors: dict[str, int] = {}
    for row in rows:
        if row[0] is not None:
            errors[str(row[0])] = errors.get(str(row[0]), 0) + 1
    answers = sum(1 for r in rows if r[0] is None)
    return Recorded(
        answers,
        len(rows) - answers,
        errors,
        sum(int(r[1]) for r in rows),  # type: ignore[call-overload]
        sum(int(r[2]) for r in rows),  # type: ignore[call-overload]
        sum(float(r[3]) for r in rows),  # type: ignore[arg-type]
    )


def cmd_record(args: argparse.Namespace) -> int:
    if {"--config", "-c"} & set(args.freqtrade_args):
        print("llm-oracle: give --config before '--': record merges the configs", file=sys.stderr)
        return EXIT_USAGE
    raw = load_freqtrade_config(args.config)
    block = raw.get("llm_oracle") if isinstance(raw.get("llm_oracle"), dict) else {}
    assert isinstance(block, dict)
    overlay = record_overlay(block, source=args.source, tier=args.tier)
    try:
        cfg = load_config(deep_merge(block, overlay))  # validated as it will run
    except OracleConfigError as exc:
        print(f"llm-oracle: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.tier is not None and cfg.replay.source is not BackendName.GEMINI:
        print("llm-oracle: --tier applies to recording gemini only", file=sys.stderr)
        return EXIT_USAGE
    user_data = Path(args.userdir or raw.get("user_data_dir") or "user_data")
    journal_path = cfg.resolved_journal_path(user_data)
    paid = cfg.replay.source is BackendName.GEMINI
    if paid and not args.estimate and api_key_from_env() is None:
        print(
            f"llm-oracle: recording Gemini needs an API key: set {' or '.join(API_KEY_ENV)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    with ExitStack() as stack:
        port = offline_port(raw)
        if port is not None:
            line, used = stack.enter_context(offline_emulator(port))
            print(f"llm-oracle record: {line}", file=sys.stderr)
            raw = repoint(raw, used)
        total: int | None = None
        # A batch recording counts in each of its rounds.
        if args.estimate or not (args.no_count or args.tier == BATCH_TIER):
            code, total = _count(args, raw, block, cfg, journal_path)
            if code is not None:
                return code
        if args.estimate:
            return EXIT_OK
        if args.tier == BATCH_TIER:
            return _record_batch(args, raw, block, cfg, journal_path)
        return _record(args, raw, block, overlay, cfg, journal_path, total)
    return EXIT_OK  # unreachable; keeps type checkers content


def _count(
    args: argparse.Namespace,
    raw: dict[str, Any],
    block: dict[str, Any],
    cfg: OracleConfig,
    journal_path: Path,
) -> tuple[int | None, int | None]:
    counted = Counted()
    overlay = record_overlay(block, source=args.source, tier=args.tier, counting=True)
    run = _run_child(args, _merged(raw, block, overlay), _COUNTING_GRACE_S, counted.add, "counting")
    if run.signum is not None:
        return 128 + run.signum, None
    if run.code != 0:
        print(f"llm-oracle record: freqtrade failed ({run.code}) while counting", file=sys.stderr)
        return EXIT_FREQTRADE, None
    batch = args.tier == BATCH_TIER
    found = estimate(counted, cfg, journal_path, BATCH_PRICE_FACTOR if batch else None)
    paid = cfg.replay.source is BackendName.GEMINI
    print(found.line((args.tier or cfg.gemini.tier.value) if paid else None))
    sys.stdout.flush()
    return None, counted.decisions


def _record(
    args: argparse.Namespace,
    raw: dict[str, Any],
    block: dict[str, Any],
    overlay: dict[str, Any],
    cfg: OracleConfig,
    journal_path: Path,
    total: int | None,
) -> int:
    run_id = _new_run()
    bar = RunProgress(total)
    grace = stop_grace_s(cfg.timeout_s)
    try:
        run = _run_child(
            args,
            _merged(raw, block, overlay),
            grace,
            bar.event,
            "recording",
            {RUN_ENV: run_id},
        )
    finally:
        bar.close()
    result = recorded_by(journal_path, run_id)
    print(f"llm-oracle record: {result.line()}; journal {journal_path}", flush=True)
    again = "run the same command again to continue (answered questions are not asked again)"
    if run.signum is not None:
        print(f"llm-oracle record: stopped by signal {run.signum}; {again}", file=sys.stderr)
        return 128 + run.signum
    if run.code != 0:
        print(f"llm-oracle record: freqtrade exited with {run.code}; {again}", file=sys.stderr)
        return EXIT_FREQTRADE
    if result.failed:
        print(
            f"llm-oracle record: {result.failed} decisions failed; {again} (budget refusals "
            "wait for the next UTC day)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if bar.asked and not result.answers:
        print(f"llm-oracle record: {bar.asked} questions, nothing recorded", file=sys.stderr)
        return EXIT_FAILED
    if not bar.asked:
        print("llm-oracle record: nothing to ask: the journal answers every question already")
    return EXIT_OK


def _record_batch(
    args: argparse.Namespace,
    raw: dict[str, Any],
    block: dict[str, Any],
    cfg: OracleConfig,
    journal_path: Path,
) -> int:
    """`--tier batch`: rounds of (counting pass -> one batch job -> its answers journaled)."""
    budget = cfg.gemini.limits.budget
    caps = Caps(budget.daily_calls, budget.daily_tokens, budget.daily_usd)
    backend = GeminiBackend(cfg.gemini, cfg.timeout_s)
    run_id = _new_run()
    overlay = record_overlay(block, source=args.source, counting=True)
    with Journal(journal_path) as journal, _Signals() as signals:
        journal.run = run_id

        def say(text: str) -> None:
            print(f"llm-oracle record: {text}", file=sys.stderr, flush=True)

        recorder = BatchRecorder(
            backend,
            journal,
            caps,
            poll_s=args.batch_poll_s,
            stop=signals.event.is_set,
            say=say,
        )
        code = asyncio.run(_batch_rounds(args, raw, block, overlay, recorder, signals, say))
        asyncio.run(backend.aclose())
    result = recorded_by(journal_path, run_id)
    print(f"llm-oracle record: {result.line()}; journal {journal_path}", flush=True)
    if code is not None:
        return code
    return EXIT_FAILED if result.failed else EXIT_OK


async def _batch_rounds(
    args: argparse.Namespace,
    raw: dict[str, Any],
    block: dict[str, Any],
    overlay: dict[str, Any],
    recorder: BatchRecorder,
    signals: _Signals,
    say: Callable[[str], None],
) -> int | None:
    again = "run the same command again: the job runs on at Google and is collected then"
    for name in await recorder.resume_jobs():  # a restarted recording: never pay twice
        say(f"resuming batch job {name}")
        if await recorder.collect(name) is None:
            say(f"stopped; {again}")
            return 128 + signals.received[0]
    for round_no in range(1, MAX_BATCH_ROUNDS + 1):
        questions = Questions()
        # In the main thread (its signal handlers); the loop has nothing else to do meanwhile.
        run = _run_child(
            args,
            _merged(raw, block, overlay),
            _COUNTING_GRACE_S,
            questions.add,
            f"batch round {round_no}: counting",
            {QUESTIONS_ENV: "1"},
        )
        if run.signum is not None:
            return 128 + run.signum
        if run.code != 0:
            say(f"freqtrade failed ({run.code}) while counting")
            return EXIT_FREQTRADE
        wanted = {
            k: r for k, r in questions.requests.items() if recorder.backend.identity.key(r) == k
        }
        if not wanted:
            say(f"batch round {round_no}: nothing left to ask")
            return None
        # Entries first: exit reviews in this pass may belong to trades that only the rules
        # stand-ins opened; once every entry is answered, the reviews asked are the real ones.
        entries = {k: r for k, r in wanted.items() if r.purpose is Purpose.ENTRY}
        questions.requests = entries or wanted
        held, exhausted = recorder.reserve(questions)
        if not held:
            say(f"daily budget exhausted ({exhausted}): nothing submitted")
            return EXIT_FAILED
        try:
            name = await recorder.submit(questions, held)
        except Exception as exc:  # the provider refused the job: nothing is held or paid
            detail = recorder.backend.scrub(f"{type(exc).__name__}: {exc}")
            say(
                f"batch round {round_no}: the job could not be created ({detail}); its "
                "reservations were given back; run the same command again"
            )
            return EXIT_FAILED
        found = await recorder.collect(name)
        if found is None:
            say(f"stopped; {again}")
            return 128 + signals.received[0]
        say(
            f"batch round {round_no}: job {name} {found.state}: {found.answers} answers, "
            f"{found.failed} failed"
        )
        if exhausted is not None:
            say(f"daily budget exhausted ({exhausted}): the rest waits for the next UTC day")
            return EXIT_FAILED
    say(f"stopped after {MAX_BATCH_ROUNDS} rounds; run again to continue")
    return EXIT_FAILED
