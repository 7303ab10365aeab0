"""Flex tier: `serviceTier: flex` on the wire (google-genai's `service_tier`), half the price.

The same question asked in the standard and in the flex tier: same tokens, the flex answer
costs half, and only the flex request carries the field. The tier is not part of the decision
key: a flex recording replays for a standard-tier config.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_oracle.config import load_config
from llm_oracle.journal import Journal
from llm_oracle.oracle import Oracle
from llm_oracle.record.command import FLEX_TIMEOUT_S, record_overlay
from tests.factories import make_request
from tests.fake_gemini import FakeGemini
from tests.gemini_helpers import fake_gemini_env, gemini_config

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    yield from fake_gemini_env(monkeypatch)


def _ask(tmp_path: Path, fake: FakeGemini, tier: str) -> tuple[float, int, str]:
    config = load_config(gemini_config(fake, gemini={"tier": tier}))
    oracle = Oracle(config, Journal(tmp_path / f"{tier}.sqlite"))
    try:
        oracle.decide_many([make_request()])
    finally:
        oracle.close()
    with Journal(tmp_path / f"{tier}.sqlite", create=False) as j:
        cost, tokens, key = j.query(
            "SELECT cost_usd, prompt_tokens + output_tokens + thinking_tokens, key FROM decisions"
        )[0]
    return float(cost), int(tokens), str(key)  # type: ignore[arg-type, call-overload]


def test_flex_sends_the_service_tier_and_costs_half(tmp_path: Path, fake: FakeGemini) -> None:
    standard = _ask(tmp_path, fake, "standard")
    flex = _ask(tmp_path, fake, "flex")
    bodies = [r.body for r in fake.requests]
    assert "serviceTier" not in bodies[0]
    assert bodies[1]["serviceTier"] == "flex"
    assert flex[1] == standard[1] > 0
    assert flex[0] == pytest.approx(standard[0] / 2) and standard[0] > 0
    assert flex[2] == standard[2]  # same decision key: replays across tiers


def test_record_tier_flex_sets_the_tier_and_a_timeout_for_minutes() -> None:
    overlay = record_overlay({"backend": "replay", "replay": {"source": "gemini"}}, tier="flex")
    config = load_config(overlay)
    assert config.gemini.tier.value == "flex" and config.timeout_s == FLEX_TIMEOUT_S
    assert config.replay.on_miss == "call:gemini"
    # An overlay that only names the source is valid once record's own settings are applied.
    assert load_config(record_overlay({"replay": {"source": "gemini"}})).replay.source == "gemini"
