"""`llm-oracle report` end to end: real Freqtrade backtests (the runner subprocess) against the
Bybit emulator, on two pairs and two days of the sample.

Can the report tell value from noise? A clairvoyant oracle (a journal whose decisions were
written from the ledger's future outcomes: allowed here, inside a test only) must come out far
above the placebo band; a random one inside it. The ledger must never change a request: two
fresh recordings, with and without it, ask exactly the same questions. The HTML opens offline
and holds the equity, placebo and calibration plots.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bybit_emulator import Emulator
from llm_oracle.backends import Backend, build_backend
from llm_oracle.config import load_config
from llm_oracle.journal import Journal
from llm_oracle.models import Action, JournalEntry, OracleDecision, OracleRequest, Purpose
from tests.factories import ROOT
from tests.freqtrade_run import offline_overlay

pytestmark = pytest.mark.integration

TIMERANGE = "20250605-20250607"
PAIRS = ["BTC/USDT:USDT", "ETH/USDT:USDT"]


def _report(
    emulator: Emulator, datadir: Path, workdir: Path, *extra: str, on_miss: str = "call:rules"
) -> tuple[dict[str, Any], Path, str]:
    """Run the real CLI; return report.json, the report directory and the terminal output."""
    userdir = workdir / "user_data"
    userdir.mkdir(parents=True, exist_ok=True)
    overlay = offline_overlay(
        emulator.url,
        llm_oracle={"replay": {"source": "rules", "on_miss": on_miss}},
    )
    overlay["exchange"]["pair_whitelist"] = PAIRS
    overlay_path = workdir / "overlay.json"
    overlay_path.write_text(json.dumps(overlay))
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("GEMINI_API_KEY", None)  # a report never calls: no key needed, none given
    env.pop("GOOGLE_API_KEY", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm_oracle.report",
            "--config",
            str(ROOT / "config.json"),
            "--config",
            str(overlay_path),
            "--userdir",
            str(userdir),
            "--datadir",
            str(datadir),
            "--timerange",
            TIMERANGE,
            "--name",
            "t",
            *extra,
            "--",
            "--strategy-path",
            str(ROOT / "strategies"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    outdir = userdir / "reports" / "t"
    return json.loads((outdir / "report.json").read_text()), outdir, output


def _journal(workdir: Path) -> Path:
    return workdir / "user_data" / "oracle" / "journal.sqlite"


def _rows(journal: Path) -> list[tuple[Any, ...]]:
    with Journal(journal, create=False) as j:
        return j.query(
            "SELECT key, purpose, backend, model, prompt_version, settings, request_json, "
            "decision_json FROM decisions WHERE error_kind IS NULL ORDER BY key"
        )


def _journal_with(
    source: Path, target: Path, decide: Any, as_backend: Backend | None = None, cost: float = 0.0
) -> int:
    """A journal holding the source's recorded questions with answers from `decide(key, row)`
    for entries (None = hold) and the recorded answers for exit reviews; keyed as `as_backend`
    would key them (default: as recorded), each row billed `cost` USD."""
    entries = []
    for key, purpose, backend, model, version, settings, request, decision in _rows(source):
        if purpose == Purpose.ENTRY.value:
            answer = decide(str(key), json.loads(str(request)))
        else:
            answer = OracleDecision.model_validate_json(str(decision))
        if as_backend is not None:
            ident = as_backend.identity
            key = ident.key(OracleRequest.model_validate_json(str(request)))
            backend, model, version, settings = (
                ident.name,
                ident.model,
                ident.prompt_version,
                ident.settings,
            )
        entries.append(
            JournalEntry(
                key=str(key),
                purpose=Purpose(str(purpose)),
                backend=str(backend),
                model=str(model),
                prompt_version=str(version),
                settings=str(settings),
                request_json=str(request),
                decision=answer or OracleDecision.hold("test: veto"),
                cost_usd=cost,
                attempts=1 if cost else 0,
            )
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with Journal(target) as journal:
        journal.record_many(entries)
    return len(entries)


def _confirm(side: str) -> OracleDecision:
    return OracleDecision(action=Action(side), confidence=0.8, stop_loss=0.01, reasoning="test")


@pytest.fixture(scope="module")
def recorded(
    emulator: Emulator, sample_datadir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path, str, Path]:
    """A report over a fresh journal: the rules backend records every decision on the way."""
    workdir = tmp_path_factory.mktemp("report-rules")
    report, outdir, output = _report(
        emulator, sample_datadir, workdir, "--seeds", "3", "--check-identity"
    )
    return report, outdir, output, workdir


def test_report_writes_md_html_json_and_reproduces_the_replay(
    recorded: tuple[dict[str, Any], Path, str, Path],
) -> None:
    report, outdir, output, _ = recorded
    names = [v["name"] for v in report["variants"]]
    assert names[:4] == ["oracle", "identity", "prefilter", "inverted"]
    assert sorted(n for n in names if n.startswith("placebo")) == [f"placebo-{i}" for i in range(3)]
    # The variant machinery itself: the recorded decisions as a table trade exactly as replay.
    assert report["identity_matches_oracle"] is True
    oracle = next(v for v in report["variants"] if v["name"] == "oracle")
    assert oracle["metrics"]["trades"] > 0
    assert report["veto"]["candidates"] > 50
    assert report["pairs"] == PAIRS
    # A fresh journal: the free rules backend recorded every candidate on the way, once.
    assert report["misses"]["recorded_now"] >= report["veto"]["candidates"]
    assert report["misses"]["unanswered_candidates"] == 0
    assert "verdict: " in output and "oracle (replayed)" in output  # the headline table
    assert re.search(r"report: +\d+%.*\d+/\d+", output)  # the progress bar
    md = (outdir / "report.md").read_text()
    for section in ("## Veto ledger", "## Cost", "## Memorisation audit", "## Stability"):
        assert section in md
    assert report["memorisation"]["language_model"] is False  # rules remembers nothing


def test_html_opens_offline_with_the_plots(
    recorded: tuple[dict[str, Any], Path, str, Path],
) -> None:
    _, outdir, _, _ = recorded
    page = (outdir / "report.html").read_text()
    assert not re.search(r"<script[^>]+src=", page, re.I)
    assert not re.search(r"<link[^>]+href=[\"']?(https?:)?//", page, re.I)
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js inline
    assert re.findall(r'<div id="(plot-\d)"', page) == [f"plot-{i}" for i in range(4)]
    for title in ("Equity of each variant", "placebo band", "Calibration:"):
        assert title in page


def test_the_ledger_never_changes_a_request(
    recorded: tuple[dict[str, Any], Path, str, Path],
    emulator: Emulator,
    sample_datadir: Path,
    tmp_path: Path,
) -> None:
    _, outdir, _, workdir = recorded
    _report(emulator, sample_datadir, tmp_path, "--seeds", "0", "--no-ledger")
    with_ledger = [(r[0], r[6]) for r in _rows(_journal(workdir))]
    without = [(r[0], r[6]) for r in _rows(_journal(tmp_path))]
    assert len(with_ledger) > 50
    assert with_ledger == without  # the same questions, byte for byte
    ledger = json.loads((outdir / "ledger.json").read_text())
    assert all(c["ledger"] is not None for c in ledger[:-5])
    unvalued = json.loads(((tmp_path / "user_data" / "reports" / "t") / "ledger.json").read_text())
    assert [c["key"] for c in unvalued] == [c["key"] for c in ledger]
    assert all(c["ledger"] is None for c in unvalued)


def test_clairvoyant_beats_the_placebo_band_random_stays_inside(
    recorded: tuple[dict[str, Any], Path, str, Path],
    emulator: Emulator,
    sample_datadir: Path,
    tmp_path: Path,
) -> None:
    _, outdir, _, workdir = recorded
    future = {
        c["key"]: (c["side"], c["ledger"]["r"])
        for c in json.loads((outdir / "ledger.json").read_text())
        if c["ledger"] is not None
    }

    def clairvoyant(key: str, request: dict[str, Any]) -> OracleDecision | None:
        side, r = future.get(key, (request["candidate"], -1.0))
        return _confirm(side) if r > 0 else None

    seeded = np.random.default_rng(7)

    def random(key: str, request: dict[str, Any]) -> OracleDecision | None:
        return _confirm(request["candidate"]) if seeded.random() < 0.5 else None

    sure_journal = _journal(tmp_path / "clairvoyant")
    _journal_with(_journal(workdir), sure_journal, clairvoyant)
    results = {
        "clairvoyant": _report(
            emulator, sample_datadir, tmp_path / "clairvoyant", "--seeds", "4", on_miss="rules"
        )[0]
    }
    # The random oracle is a "Gemini" recording, each answer billed: the report judges it
    # without a key and without a call, and charges the bill.
    block = json.loads((ROOT / "config.json").read_text())["llm_oracle"]
    gemini = build_backend(load_config({**block, "backend": "gemini"}))
    noise_journal = _journal(tmp_path / "random")
    rows = _journal_with(_journal(workdir), noise_journal, random, gemini, cost=0.001)
    results["random"] = _report(
        emulator, sample_datadir, tmp_path / "random", "--seeds", "0", "--source", "gemini"
    )[0]
    assert len(_rows(noise_journal)) == rows  # nothing asked, nothing recorded

    sure = results["clairvoyant"]
    assert sure["veto"]["vetoed"] > 20
    assert sure["veto"]["vetoed_losers_share"] == 1.0
    # Far above: beyond every placebo seed, and its CI's lower end above the band's p95.
    assert sure["veto"]["r_per_100"]["low"] > max(sure["placebo_veto_values"])
    assert sure["placebo_veto"]["oracle_percentile"] == 100.0
    assert ": yes;" in sure["verdict"]
    # In the real backtests too: the clairvoyant trades beat every placebo backtest.
    profits = [v["metrics"]["profit"] for v in sure["variants"] if v["kind"] == "placebo"]
    oracle = next(v for v in sure["variants"] if v["name"] == "oracle")["metrics"]["profit"]
    assert len(profits) == 4 and oracle > max(profits)

    noise = results["random"]
    assert noise["veto"]["vetoed"] > 20
    low, high = np.percentile(noise["placebo_veto_values"], [2.5, 97.5])
    assert low < noise["veto"]["r_per_100"]["value"] < high
    assert ": no;" in noise["verdict"]
    assert noise["source_backend"] == "gemini"
    assert noise["misses"]["unanswered_candidates"] == 0
    bill = noise["cost"]["bill"]
    assert bill["usd"] == pytest.approx(0.001 * bill["rows"]) and bill["decisions"] >= 54
    assert noise["cost"]["value_added_net"] == pytest.approx(
        noise["variants"][0]["metrics"]["profit"]
        - next(v for v in noise["variants"] if v["name"] == "prefilter")["metrics"]["profit"]
        - bill["usd"]
    )
    memo = noise["memorisation"]  # June 2025 lies after the shipped January 2025 cutoff
    assert memo["language_model"] and memo["cutoff"] == "2025-01-31" and memo["warning"] is None
    assert memo["before"] is None and memo["after"]["candidates"] == noise["veto"]["candidates"]
