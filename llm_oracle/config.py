"""The `llm_oracle` block of the Freqtrade config, validated with pydantic.

A typo or a bad value must stop the bot at startup with a message that names the key and the
allowed values, never fall back to a silent default: `load_config` turns pydantic's errors into
one such message per problem.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)


class BackendName(StrEnum):
    RULES = "rules"
    REPLAY = "replay"


class FallbackPolicy(StrEnum):
    """What answers when the backend fails or a replay misses without `call`."""

    HOLD = "hold"
    RULES = "rules"


_ON_MISS = re.compile(r"^(hold|rules|call:[a-z_]+)$")


class ReplayConfig(BaseModel):
    """Replay answers from the journal only; `source` names whose recorded decisions to use."""

    model_config = _STRICT
    source: BackendName = BackendName.RULES
    on_miss: str = Field(default="hold", description="hold | rules | call:<backend>")

    @field_validator("on_miss")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if not _ON_MISS.match(value):
            raise ValueError(f"{value!r} is not one of: hold, rules, call:<backend>")
        return value

    @model_validator(mode="after")
    def _replayable(self) -> Self:
        if self.source is BackendName.REPLAY:
            raise ValueError("replay.source must be a backend that makes decisions, not 'replay'")
        if self.call_backend is not None and self.call_backend != self.source.value:
            # Anything else would record rows under a key that replay never looks up.
            raise ValueError(
                f"on_miss 'call:{self.call_backend}' must call the replay source "
                f"'{self.source.value}'"
            )
        return self

    @property
    def call_backend(self) -> str | None:
        return self.on_miss.removeprefix("call:") if self.on_miss.startswith("call:") else None


class RulesConfig(BaseModel):
    """Parameters of the deterministic local policy (also the offline default and fallback)."""

    model_config = _STRICT
    atr_stop_multiplier: float = Field(default=2.0, ge=0.5, le=10)
    min_stop: float = Field(default=0.003, ge=0.0005, le=0.05)
    max_stop: float = Field(default=0.03, ge=0.001, le=0.25)
    reward_risk: float = Field(default=1.5, ge=0.5, le=10)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_stop > self.max_stop:
            raise ValueError("rules.min_stop must not exceed rules.max_stop")
        return self


class OracleConfig(BaseModel):
    model_config = _STRICT
    enabled: bool = Field(default=True, description="false = pre-filter only, no oracle")
    backend: BackendName = BackendName.REPLAY
    journal_path: Path = Field(
        default=Path("oracle/journal.sqlite"), description="relative to the user_data directory"
    )
    fallback: FallbackPolicy = FallbackPolicy.HOLD
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    prompt_candles: int = Field(default=24, ge=4, le=200)
    replay: ReplayConfig = ReplayConfig()
    rules: RulesConfig = RulesConfig()

    def resolved_journal_path(self, user_data_dir: Path) -> Path:
        path = self.journal_path.expanduser()
        return path if path.is_absolute() else Path(user_data_dir) / path


class OracleConfigError(ValueError):
    """The `llm_oracle` config block is invalid; str() lists every problem."""


def load_config(raw: dict[str, Any] | None, *, section: str = "llm_oracle") -> OracleConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise OracleConfigError(f"{section}: must be an object, got {type(raw).__name__}")
    try:
        return OracleConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(section, err) for err in exc.errors()]
        raise OracleConfigError(
            f"invalid '{section}' config:\n" + "\n".join(f"  - {p}" for p in problems)
        ) from None


def _describe(section: str, err: Any) -> str:
    loc = ".".join(str(p) for p in (section, *err["loc"]))
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        owner = _model_at(err["loc"][:-1])
        allowed = ", ".join(owner.model_fields) if owner else "see README"
        return f"{loc}: unknown key; allowed keys: {allowed}"
    if err["type"] == "enum":
        return f"{loc}: {value!r} is not allowed; allowed values: {err['ctx']['expected']}"
    return f"{loc}: {err['msg']} (got {value!r})"


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = OracleConfig
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
