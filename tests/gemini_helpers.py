"""Shared pieces of the Gemini tests: the fake endpoint as a fixture, configs, journal rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_oracle.cli import deep_merge
from llm_oracle.config import load_config
from llm_oracle.journal import Journal
from llm_oracle.oracle import Oracle
from tests.factories import make_request
from tests.fake_gemini import FakeGemini, start_fake_gemini

KEY = "AIzaFAKE-test-key-0123456789abcdef"


def fake_gemini_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    """The fake endpoint with the key in the environment and no proxy for loopback; test
    modules wrap it in a `fake` fixture (`yield from fake_gemini_env(monkeypatch)`)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with start_fake_gemini(api_key=KEY) as server:
        yield server


def gemini_config(fake: FakeGemini, **over: Any) -> dict[str, Any]:
    gemini = {
        "base_url": fake.url,
        "retry": {"max_retries": 0, "initial_backoff_s": 0.05},
        "limits": {"concurrency": 4, "rpm": 60_000, "rpm_burst": 100},
    }
    gemini = deep_merge(gemini, over.pop("gemini", {}))
    return {"backend": "gemini", "timeout_s": 5, "fallback": "hold", "gemini": gemini, **over}


def make_oracle(path: Path, fake: FakeGemini, **over: Any) -> Oracle:
    return Oracle(load_config(gemini_config(fake, **over)), Journal(path / "j.sqlite"))


def all_rows(journal: Journal) -> list[dict[str, Any]]:
    with journal._lock:
        cursor = journal._read().execute("SELECT * FROM decisions ORDER BY id")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def requests_n(n: int, **kw: Any) -> list[Any]:
    return [make_request(rsi=40.0 + i, **kw) for i in range(n)]
