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
from llm_oracle.backends.variants import DecisionTable, VariantBackend
from llm_oracle.config import BackendName, OracleConfig, OracleConfigError

_FACTORIES: dict[BackendName, Callable[[OracleConfig], Backend]] = {
    BackendName.RULES: lambda cfg: RulesBackend(cfg.rules),
    BackendName.GEMINI: lambda cfg: GeminiBackend(cfg.gemini, cfg.timeout_s),
}


def build_backend(config: OracleConfig) -> Backend:
    """The backend the config asks for, with replay wrapped around its source."""
    if config.backend is BackendName.REPLAY:
        source = _FACTORIES[config.replay.source](config)
        return ReplayBackend(source, config.replay.on_miss, RulesBackend(config.rules))
    if config.backend is BackendName.VARIANT:
        return _variant(config)
    return _FACTORIES[config.backend](config)


def _variant(config: OracleConfig) -> Backend:
    """Evaluation only: the replay source's decisions as rearranged by `llm-oracle report`."""
    if config.variant.table is None:
        raise OracleConfigError("llm_oracle.variant.table: the variant backend needs a table")
    source = _FACTORIES[config.replay.source](config)
    table = DecisionTable.read(config.variant.table)
    return VariantBackend(source, table, config.variant.review_miss, RulesBackend(config.rules))


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
