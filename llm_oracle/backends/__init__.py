"""Backends behind one interface, built by name from the config.

To add a provider: write `backends/<name>.py` with a `Backend` subclass, add its name to
`config.BackendName` and one factory line to `_FACTORIES`.
"""

from __future__ import annotations

from collections.abc import Callable

from llm_oracle.backends.base import Backend, BackendIdentity, BackendResult, failure
from llm_oracle.backends.gemini import GeminiBackend
from llm_oracle.backends.replay import ReplayBackend
from llm_oracle.backends.rules import RulesBackend
from llm_oracle.config import BackendName, OracleConfig

_FACTORIES: dict[BackendName, Callable[[OracleConfig], Backend]] = {
    BackendName.RULES: lambda cfg: RulesBackend(cfg.rules),
    BackendName.GEMINI: lambda cfg: GeminiBackend(cfg.gemini, cfg.timeout_s),
}


def build_backend(config: OracleConfig) -> Backend:
    """The backend the config asks for, with replay wrapped around its source."""
    if config.backend is BackendName.REPLAY:
        source = _FACTORIES[config.replay.source](config)
        return ReplayBackend(source, config.replay.on_miss, RulesBackend(config.rules))
    return _FACTORIES[config.backend](config)


__all__ = [
    "Backend",
    "BackendIdentity",
    "BackendResult",
    "GeminiBackend",
    "ReplayBackend",
    "RulesBackend",
    "build_backend",
    "failure",
]
