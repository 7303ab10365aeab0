"""Live-path figures of the Gemini oracle, against the fake Gemini server on 127.0.0.1.

1. fan-out: 20 pairs have a candidate on the same candle; the fake answers each after 2 s.
   Wall time until all 20 decisions are in (target <= 1.2 x one call, ~2.4 s, not 40 s).
2. recording throughput: 90 decisions with `recording` on at a configured RPM of 120 and an
   instant fake; achieved rate vs the RPM (target within 10%).
3. journal writes per second: one answer per transaction, as the oracle commits them.

All three use the real google-genai client through `gemini.base_url`.

    .venv/bin/python bench/oracle_live.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_oracle import Journal, JournalEntry, OracleDecision, load_config, open_oracle  # noqa: E402
from llm_oracle.models import Action, Purpose  # noqa: E402
from tests.factories import make_request  # noqa: E402
from tests.fake_gemini import Ok, Slow, start_fake_gemini  # noqa: E402

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


def oracle_for(url: str, root: Path, name: str, **extra: object):
    block = {
        "backend": "gemini",
        "journal_path": str(root / f"{name}.sqlite"),
        "timeout_s": 10,
        "gemini": {
            "base_url": url,
            "limits": {"concurrency": 20, "rpm": 6000, "rpm_burst": 20},
        },
    }
    block.update(extra)
    return open_oracle(load_config(block), root)


def fan_out(url: str, fake, root: Path, runs: int = 3) -> dict[str, float]:
    walls = []
    for run in range(runs):
        fake.default = Slow(2.0)
        oracle = oracle_for(url, root, f"fanout{run}")
        # Distinct requests (20 pairs), so nothing is a journal hit.
        requests = [make_request(rsi=30 + i + run * 0.1) for i in range(20)]
        started = time.perf_counter()
        outcomes = oracle.decide_many(requests)
        walls.append(time.perf_counter() - started)
        assert all(o.error_kind is None for o in outcomes), [o.error_kind for o in outcomes]
        oracle.close()
    fake.default = Ok()
    median = statistics.median(walls)
    return {"one_call_s": 2.0, "all_20_median_s": round(median, 3), "ratio": round(median / 2, 3)}


def throughput(url: str, fake, root: Path, rpm: int = 120, n: int = 90) -> dict[str, float]:
    fake.default = Ok()
    block_limits = {"concurrency": 4, "rpm": rpm, "rpm_burst": 1}
    oracle = open_oracle(
        load_config(
            {
                "backend": "gemini",
                "journal_path": str(root / "throughput.sqlite"),
                "recording": True,
                "gemini": {"base_url": url, "limits": block_limits},
            }
        ),
        root,
    )
    before = fake.count
    started = time.perf_counter()
    outcomes = oracle.decide_many([make_request(rsi=10 + i * 0.5) for i in range(n)])
    elapsed = time.perf_counter() - started
    oracle.close()
    assert all(o.error_kind is None for o in outcomes)
    sent = fake.count - before
    achieved = (sent - 1) / elapsed * 60  # the first request goes at t=0
    return {
        "configured_rpm": rpm,
        "requests": sent,
        "seconds": round(elapsed, 2),
        "achieved_rpm": round(achieved, 1),
        "ratio": round(achieved / rpm, 3),
    }


def journal_writes(root: Path, n: int = 2000) -> dict[str, float]:
    decision = OracleDecision(action=Action.LONG, confidence=0.8, stop_loss=0.01)
    request_json = make_request().canonical_json()
    with Journal(root / "writes.sqlite") as journal:
        started = time.perf_counter()
        for i in range(n):
            journal.record(
                JournalEntry(
                    key=f"{i:064x}",
                    purpose=Purpose.ENTRY,
                    backend="gemini",
                    model="bench",
                    prompt_version="v1",
                    request_json=request_json,
                    decision=decision,
                    raw_response=decision.model_dump_json(),
                )
            )
        elapsed = time.perf_counter() - started
    return {"writes": n, "seconds": round(elapsed, 3), "writes_per_s": round(n / elapsed)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, start_fake_gemini("bench-key-000") as fake:
        os.environ["GEMINI_API_KEY"] = "bench-key-000"
        root = Path(tmp)
        report = {
            "fan_out_20_pairs_2s": fan_out(fake.url, fake, root),
            "recording_throughput": throughput(fake.url, fake, root),
            "journal": journal_writes(root),
            "max_in_flight_at_server": fake.max_in_flight,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
