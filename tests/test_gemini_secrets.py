"""Secrets cannot leak through answers: the real google-genai client against endpoints on loopback
that echo the API key in every field, redirect elsewhere, or answer far too much.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_oracle.backends.gemini import GeminiBackend
from llm_oracle.models import DecisionSource, ErrorKind, OracleRequest
from tests.fake_gemini import Echo, EchoKey, FakeGemini, Huge, Ok, Redirect, start_fake_gemini
from tests.gemini_helpers import KEY, all_rows, fake_gemini_env, make_oracle, requests_n

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    yield from fake_gemini_env(monkeypatch)


def test_a_key_echoed_in_every_field_reaches_no_column_log_or_message(
    tmp_path: Path,
    fake: FakeGemini,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.then(Echo("reasoning"), Echo("model_version"), Echo("raw"), EchoKey())
    oracle = make_oracle(tmp_path, fake)
    sent: list[str] = []
    oracle.on_event = sent.append
    outcomes = [oracle.decide_many([r])[0] for r in requests_n(4)]

    # A backend bug whose exception carries the key: the oracle's own scrub catches it.
    async def leaky(self: GeminiBackend, request: OracleRequest, deadline: float | None) -> None:
        raise RuntimeError(f"connection to https://x/?key={KEY} failed")

    monkeypatch.setattr(GeminiBackend, "decide", leaky)
    outcomes += oracle.decide_many(requests_n(5)[4:])
    oracle.flush()

    kinds = [o.error_kind for o in outcomes]
    assert kinds == [
        None,  # the answer is usable: the key in its reasoning is redacted, not fatal
        ErrorKind.MODEL_MISMATCH,
        ErrorKind.INVALID_JSON,
        ErrorKind.CLIENT_ERROR,
        ErrorKind.BACKEND_ERROR,
    ]
    rows = all_rows(oracle.journal)
    assert len(rows) == 5
    for row in rows:
        for column, value in row.items():
            assert KEY not in str(value), (column, value)
    # The fields were there, and were scrubbed (not dropped).
    answer = json.loads(rows[0]["decision_json"])
    assert answer["reasoning"] == "the key is [redacted], escaped: [redacted]"
    assert "[redacted]" in rows[0]["raw_response"]
    assert rows[1]["model_version"] == "gemini-3.8-flash-[redacted]"
    assert "[redacted]" in rows[2]["raw_response"] and "[redacted]" in rows[3]["error_detail"]
    assert "[redacted]" in rows[4]["error_detail"]
    # Not in what the strategy sends on (reasoning, events), nor in any log line.
    assert all(KEY not in o.decision.reasoning for o in outcomes)
    assert sent and all(KEY not in m for m in sent)
    assert all(KEY not in m for m in oracle.drain_events())
    assert KEY not in caplog.text and KEY not in oracle.stats.summary()
    oracle.close()


def test_no_redirect_is_followed_with_the_key(tmp_path: Path, fake: FakeGemini) -> None:
    with start_fake_gemini(api_key="another-hosts-key-000") as elsewhere:
        # localhost vs 127.0.0.1: another host; 307 keeps the POST and, by default, its headers.
        fake.default = Redirect(elsewhere.url.replace("127.0.0.1", "localhost"))
        oracle = make_oracle(tmp_path, fake, gemini={"retry": {"max_retries": 3}})
        [outcome] = oracle.decide_many(requests_n(1))
        assert elsewhere.count == 0  # the key never left for the other host
        assert fake.count == 1  # a redirect is final, not retried
        assert outcome.error_kind is ErrorKind.CLIENT_ERROR
        oracle.flush()
        [row] = all_rows(oracle.journal)
        assert "redirect refused" in row["error_detail"]
        oracle.close()


def test_an_oversized_answer_is_refused_and_not_stored_whole(
    tmp_path: Path, fake: FakeGemini
) -> None:
    fake.then(Huge(200_000), Ok())
    oracle = make_oracle(tmp_path, fake)
    first, second = (oracle.decide_many([r])[0] for r in requests_n(2))
    assert first.error_kind is ErrorKind.ANSWER_TOO_LARGE
    assert second.source is DecisionSource.BACKEND  # a content error: the provider is fine
    oracle.flush()
    row = all_rows(oracle.journal)[0]
    assert row["error_kind"] == "answer_too_large"
    assert "max_answer_bytes 65536" in row["error_detail"]
    assert len(row["raw_response"]) < 2200 and "refused and not stored" in row["raw_response"]
    assert row["cost_usd"] > 0  # it was paid for
    oracle.close()
