"""The `gemini` block of the config: defaults, prices, and errors that name the key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_oracle.backends import GeminiBackend, build_backend
from llm_oracle.config import BackendName, OracleConfigError, load_config
from llm_oracle.models import DecisionSource
from tests.factories import make_request
from tests.fake_gemini import FakeGemini
from tests.gemini_helpers import fake_gemini_env, make_oracle


def test_gemini_defaults_are_valid_and_build_without_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    cfg = load_config({"backend": "gemini"})
    assert cfg.backend is BackendName.GEMINI
    assert cfg.gemini.model == "gemini-3.8-flash" and cfg.gemini.api_version == "v1beta"
    assert "preview" not in cfg.gemini.model  # the shipped default is a stable model
    assert "2026" in cfg.gemini.prices_checked and "pricing" in cfg.gemini.prices_checked
    assert cfg.gemini.price.input > 0 and cfg.gemini.price.output > cfg.gemini.price.input
    backend = build_backend(cfg)  # no client, no key needed until the first call
    assert isinstance(backend, GeminiBackend)
    assert backend.identity.name == "gemini" and backend.limits is cfg.gemini.limits


def test_replay_may_record_gemini() -> None:
    cfg = load_config({"replay": {"source": "gemini", "on_miss": "call:gemini"}})
    backend = build_backend(cfg)
    assert backend.identity.model == "gemini-3.8-flash"
    assert backend.limits is not None  # a recording spends: limits apply
    holding = build_backend(load_config({"replay": {"source": "gemini", "on_miss": "hold"}}))
    assert holding.limits is None  # a replay that never calls spends nothing


def test_a_new_model_needs_its_price_and_keeps_the_shipped_ones() -> None:
    with pytest.raises(OracleConfigError, match=r"no entry for model 'gemini-9-flash'"):
        load_config({"gemini": {"model": "gemini-9-flash"}})
    cfg = load_config(
        {
            "gemini": {
                "model": "gemini-9-flash",
                "prices": {"gemini-9-flash": {"input": 1.0, "output": 4.0}},
            }
        }
    )
    assert cfg.gemini.price.output == 4.0 and "gemini-3.8-flash" in cfg.gemini.prices


@pytest.mark.parametrize(
    ("block", "fragment"),
    [
        ({"temprature": 1}, r"llm_oracle\.gemini\.temprature: unknown key.*temperature"),
        ({"limits": {"rpm": 0}}, r"llm_oracle\.gemini\.limits\.rpm"),
        ({"limits": {"budget": {"daily_usd": -1}}}, r"llm_oracle\.gemini\.limits\.budget"),
        ({"limits": {"breaker": {"fails": 3}}}, r"breaker\.fails: unknown key.*failures"),
        ({"prices": {"m": {"inputs": 1}}}, r"prices\.m\.inputs: unknown key.*input, output"),
        ({"thinking_level": "huge"}, r"thinking_level: 'huge'.*'minimal'.*'high'"),
        ({"thinking_budget": 128}, r"thinking_level .*or gemini\.thinking_budget"),
        ({"base_url": "localhost:8080"}, r"base_url.*not an http\(s\) URL"),
        ({"base_url": "http://gemini.example.com"}, r"base_url.*unencrypted; use https://"),
        ({"base_url": "http://10.0.0.5:8080"}, r"base_url.*unencrypted"),
        ({"base_url": "https://user:pw@example.com"}, r"base_url: .*credentials"),
        ({"base_url": "https://example.com/?key=1"}, r"base_url: .*query"),
        ({"max_invalid_answers": 0}, r"gemini\.max_invalid_answers"),
        ({"max_answer_bytes": 10}, r"gemini\.max_answer_bytes"),
        ({"api_version": "v1"}, r"api_version"),
        ({"stop_bounds": {"atr_min": 5, "atr_max": 1}}, r"atr_min must not exceed atr_max"),
    ],
)
def test_bad_gemini_settings_name_the_key(block: dict, fragment: str) -> None:
    with pytest.raises(OracleConfigError, match=fragment):
        load_config({"backend": "gemini", "gemini": block})


def test_thinking_budget_for_2_5_models() -> None:
    cfg = load_config(
        {"gemini": {"model": "gemini-2.5-flash", "thinking_level": None, "thinking_budget": 0}}
    )
    backend = GeminiBackend(cfg.gemini, cfg.timeout_s)
    thinking = backend.generation_config("sys", make_request()).thinking_config
    assert thinking is not None and thinking.thinking_budget == 0
    assert thinking.thinking_level is None


@pytest.mark.parametrize(
    "url",
    [
        "https://generativelanguage.googleapis.com",
        "https://proxy.example.com:8443/gemini",
        "http://127.0.0.1:8080",
        "http://127.0.0.2:9",
        "http://localhost:1234",
        "http://[::1]:8080",
    ],
)
def test_https_or_loopback_base_urls_are_accepted(url: str) -> None:
    assert load_config({"gemini": {"base_url": url}}).gemini.base_url == url


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    yield from fake_gemini_env(monkeypatch)


# The SDK subclasses aiohttp.ClientSession, which aiohttp deprecates; not ours to fix.
@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")
@pytest.mark.parametrize(
    ("sampling", "sent"),
    [
        ({"temperature": None, "seed": None}, {}),
        ({"temperature": None, "seed": 7}, {"seed": 7}),
        ({"temperature": 0.5, "seed": None}, {"temperature": 0.5}),
        ({"temperature": 0.0, "seed": 0}, {"temperature": 0.0, "seed": 0}),  # 0 is not unset
        ({}, {"temperature": 1.0, "seed": 42}),  # the shipped defaults
    ],
)
def test_unset_sampling_parameters_are_left_out_of_the_request(
    tmp_path: Path, fake: FakeGemini, sampling: dict[str, Any], sent: dict[str, Any]
) -> None:
    """What reaches the wire through the real google-genai client, as the fake recorded it."""
    oracle = make_oracle(tmp_path, fake, gemini=sampling)
    [outcome] = oracle.decide_many([make_request()])
    oracle.close()
    assert outcome.source is DecisionSource.BACKEND  # the request really went out and answered
    [request] = fake.requests
    gen = request.body["generationConfig"]
    assert {k: gen[k] for k in ("temperature", "seed") if k in gen} == sent
    assert gen["maxOutputTokens"] == 2048  # the rest of the config is still sent
