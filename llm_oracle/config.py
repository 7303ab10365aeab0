"""The `llm_oracle` block of the Freqtrade config, validated with pydantic.

A typo or a bad value must stop the bot at startup with a message that names the key and the
allowed values, never fall back to a silent default: `load_config` turns pydantic's errors into
one such message per problem.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm_oracle.config_errors import format_errors

# strict: "no" is not false, true is not 1, 1.5 is not an int (a JSON 10 still is a float).
# Validated in JSON mode (load_config), where strict still reads enum values and paths from
# strings, as they come from a config file.
_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)
M = TypeVar("M", bound=BaseModel)


class BackendName(StrEnum):
    RULES = "rules"
    REPLAY = "replay"
    GEMINI = "gemini"
    # Evaluation only (`llm-oracle report`): entries answered from a decision table built from
    # the replay source's recorded decisions (placebo, inverted, ...); never calls a provider.
    VARIANT = "variant"


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
        if self.source in (BackendName.REPLAY, BackendName.VARIANT):
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


class RetryConfig(BaseModel):
    """Retries of one decision on 429 / 5xx / transport errors, always inside `timeout_s`."""

    model_config = _STRICT
    max_retries: int = Field(default=3, ge=0, le=10)
    # Retried like Google's SDK retries: 408, 429, 500, 502, 503, 504 and transport errors.
    initial_backoff_s: float = Field(default=0.5, gt=0, le=60)
    max_backoff_s: float = Field(default=8.0, gt=0, le=300)
    jitter: float = Field(default=0.25, ge=0, le=1, description="random +- fraction of a delay")


class BudgetConfig(BaseModel):
    """Daily (UTC) spending caps, counted from the journal so a restart does not reset them.

    null = no cap. Requests are checked before they are sent, so one day may overshoot by what
    the calls already in flight (at most `limits.concurrency`) cost.
    """

    model_config = _STRICT
    daily_calls: int | None = Field(default=2000, ge=1, description="requests incl. retries")
    daily_tokens: int | None = Field(default=5_000_000, ge=1)
    daily_usd: float | None = Field(default=5.0, gt=0)


class BreakerConfig(BaseModel):
    """After `failures` consecutive failed calls, stop calling for `cooldown_s`, then try one."""

    model_config = _STRICT
    failures: int = Field(default=5, ge=1, le=1000)
    cooldown_s: float = Field(default=60.0, gt=0, le=86400)


class LimitsConfig(BaseModel):
    model_config = _STRICT
    concurrency: int = Field(default=4, ge=1, le=256, description="decisions in flight")
    rpm: int = Field(default=60, ge=1, le=100_000, description="requests per minute, retries too")
    rpm_burst: int = Field(default=4, ge=1, le=10_000, description="requests sent back to back")
    budget: BudgetConfig = BudgetConfig()
    breaker: BreakerConfig = BreakerConfig()


class ModelPrice(BaseModel):
    """USD per 1M tokens. Thinking tokens are billed as output."""

    model_config = _STRICT
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0, description="null = input price")


class StopBounds(BaseModel):
    """Sane range of an LLM's stop_loss: within [atr_min, atr_max] x ATR and [min, max].

    Below half an ATR a stop is inside one candle's noise; beyond ten it risks more than the
    sizing rules assume. The absolute bounds hold whatever the ATR says.
    """

    model_config = _STRICT
    atr_min: float = Field(default=0.5, gt=0, le=10)
    atr_max: float = Field(default=10.0, gt=0, le=100)
    min: float = Field(default=0.001, ge=0.0005, le=0.1)
    max: float = Field(default=0.1, ge=0.001, le=0.25)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.atr_min > self.atr_max or self.min > self.max:
            raise ValueError("stop_bounds: atr_min must not exceed atr_max, nor min exceed max")
        return self


class ThinkingLevel(StrEnum):
    MINIMAL = "minimal"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


# Published list prices, USD per 1M tokens (text, standard tier, prompts <= 200k tokens).
# Checked 2026-11-22 against copies of https://ai.google.dev/gemini-api/docs/pricing from
# Sep-Nov 2026 (see PRICES_CHECKED). gemini-3.8-flash is half price (0.75 / 3.75 / 0.075)
# until 2026-12-31; the table holds the list price from 2027-01-01, so until then costs and
# the USD budget are overstated, never understated. Override `gemini.prices` when they change.
PRICES_CHECKED = "2026-11-22, ai.google.dev/gemini-api/docs/pricing (copies of Sep-Nov 2026)"
DEFAULT_MODEL = "gemini-3.8-flash"  # stable (not preview); the newest Flash model in Nov 2026
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gemini-3.8-flash": ModelPrice(input=1.50, output=7.50, cached_input=0.15),
    "gemini-3.5-flash": ModelPrice(input=1.50, output=9.00, cached_input=0.15),
    "gemini-3.5-flash-lite": ModelPrice(input=0.30, output=2.50, cached_input=0.03),
    "gemini-3.1-flash-lite": ModelPrice(input=0.25, output=1.50, cached_input=0.025),
    "gemini-3-flash-preview": ModelPrice(input=0.50, output=3.00, cached_input=0.05),
    # Announced to shut down on 2026-12-01 (Google reroutes the id to a newer model).
    "gemini-2.5-flash": ModelPrice(input=0.30, output=2.50, cached_input=0.03),
    "gemini-2.5-flash-lite": ModelPrice(input=0.10, output=0.40, cached_input=0.01),
}


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GeminiTier(StrEnum):
    """Gemini's service tiers for synchronous calls (`service_tier` of a request).

    flex: half price, best effort, minutes of latency (recording over history, never live).
    """

    STANDARD = "standard"
    FLEX = "flex"


# Price of a tier relative to the standard list price (ai.google.dev/gemini-api/docs/optimization).
TIER_PRICE_FACTOR: dict[GeminiTier, float] = {GeminiTier.STANDARD: 1.0, GeminiTier.FLEX: 0.5}


class GeminiConfig(BaseModel):
    """The Gemini backend. Model ids change often: `model` is configurable, with its price."""

    model_config = _STRICT
    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    # The same model answers in every tier: not part of the decision key. Costs and the USD
    # budget use the tier's price (`llm-oracle record --tier flex` sets it).
    tier: GeminiTier = GeminiTier.STANDARD
    base_url: str | None = Field(default=None, description="null = Google's endpoint")
    api_version: Literal["v1beta"] = "v1beta"  # systemInstruction/responseSchema/thinking need it
    # Google recommends the default 1.0 for Gemini 3 (lower values can loop); the seed and the
    # journal, not the temperature, are what make a backtest reproducible. null = not sent
    # (the model's own default).
    temperature: float | None = Field(default=1.0, ge=0, le=2)
    seed: int | None = Field(default=42, description="null = not sent; best effort anyway")
    max_output_tokens: int = Field(default=2048, ge=64, le=65_536, description="incl. thinking")
    thinking_level: ThinkingLevel | None = ThinkingLevel.LOW
    thinking_budget: int | None = Field(default=None, ge=-1, le=32_768, description="2.5 models")
    # A question whose answers were unusable this many times (bad JSON, out of range, blocked,
    # truncated) is not asked again until the prompt, the schema, the model or a setting in the
    # decision key changes: replay reports it as unanswerable, not as a miss.
    max_invalid_answers: int = Field(default=2, ge=1, le=100)
    # An answer's text beyond this size is refused (error kind answer_too_large), never stored
    # whole: a decision is a few hundred bytes.
    max_answer_bytes: int = Field(default=65_536, ge=1024, le=10 * 1024 * 1024)
    retry: RetryConfig = RetryConfig()
    limits: LimitsConfig = LimitsConfig()
    stop_bounds: StopBounds = StopBounds()
    prices: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    prices_checked: str = Field(
        default=PRICES_CHECKED, description="when and where `prices` were checked (a note)"
    )

    @field_validator("prices", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        # Entries given in config add to or replace the shipped ones; they never drop them.
        if isinstance(value, dict):
            shipped = {k: v.model_dump() for k, v in DEFAULT_PRICES.items()}
            return {**shipped, **value}
        return value

    @field_validator("base_url")
    @classmethod
    def _safe_url(cls, value: str | None) -> str | None:
        """https, or plain http to this machine only: the API key travels in a header."""
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        parts = urlsplit(value)
        if parts.username or parts.password:
            raise ValueError("must not carry credentials (user:password@); the key is sent apart")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ValueError(
                f"{value!r} would send the API key unencrypted; use https:// "
                "(plain http:// is allowed for 127.0.0.1, ::1 and localhost only)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.thinking_level is not None and self.thinking_budget is not None:
            raise ValueError(
                "set gemini.thinking_level (Gemini 3) or gemini.thinking_budget (2.5), not both; "
                "set the other to null"
            )
        if self.model not in self.prices:
            raise ValueError(
                f"gemini.prices has no entry for model {self.model!r} (known: "
                f"{', '.join(sorted(self.prices))}); add its USD per 1M input/output tokens"
            )
        return self

    @property
    def price(self) -> ModelPrice:
        return self.prices[self.model]


class ExitReviewConfig(BaseModel):
    """The oracle's review of open trades (custom_exit): once per trade per due candle."""

    model_config = _STRICT
    enabled: bool = True
    min_candles: int = Field(default=10, ge=1, description="first review after this many candles")
    every_candles: int = Field(default=5, ge=1, description="then every this many candles")
    min_confidence: float = Field(default=0.6, ge=0, le=1, description="to act on an 'exit'")


class NotifyConfig(BaseModel):
    """Messages to Telegram / webhooks (dry-run and live only; Freqtrade's RPC delivers them)."""

    model_config = _STRICT
    decisions: bool = Field(default=True, description="one short message per oracle decision")
    # The day's summary goes out once per UTC day, at the first loop after this time (restart-
    # safe: the day sent is kept in the trades DB). null = no daily summary.
    daily_summary_utc: str | None = Field(default="23:55", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class VariantConfig(BaseModel):
    """The `variant` backend (written by `llm-oracle report`, not meant to be set by hand)."""

    model_config = _STRICT
    table: Path | None = Field(default=None, description="decision table JSON")
    # Exit reviews the source never answered for this variant's trades: `rules` is local and
    # free; `hold` keeps the trade (a report never pays for a new question).
    review_miss: FallbackPolicy = FallbackPolicy.HOLD


class KnowledgeCutoff(BaseModel):
    """The last month a model's training data covers, and where that was published."""

    model_config = _STRICT
    # Not strict: after the merge with the shipped table (python mode) a date is a string.
    cutoff: date = Field(strict=False)
    source: str = Field(min_length=1)


# Published training-data cutoffs. Google's model pages list "Knowledge cutoff: January 2025"
# for the current Flash models (checked 2026-11, ai.google.dev/gemini-api/docs/models); the last
# day of that month is used, so a range touching it counts as possibly remembered.
_GEMINI_CUTOFF_SOURCE = "ai.google.dev/gemini-api/docs/models (model pages, checked 2026-11)"
DEFAULT_CUTOFFS: dict[str, KnowledgeCutoff] = {
    model: KnowledgeCutoff(cutoff=date(2025, 1, 31), source=_GEMINI_CUTOFF_SOURCE)
    for model in DEFAULT_PRICES
}


class ReportConfig(BaseModel):
    """`llm-oracle report`: how hard it looks (seeds, bootstrap) and what models may remember."""

    model_config = _STRICT
    # Each placebo seed is a full backtest (~13 s on the 7-pair sample): the default keeps the
    # sample's report near a minute on 2 cores; the ledger's placebo has thousands of seeds.
    placebo_seeds: int = Field(default=6, ge=0, le=1000, description="placebo backtests")
    ledger_placebo_seeds: int = Field(default=2000, ge=100, le=100_000)
    bootstrap_samples: int = Field(default=2000, ge=100, le=100_000)
    # The money rules have no time limit; a ledger trade still open after this many candles is
    # valued at that candle's close (480 x 3m = one day).
    horizon_candles: int = Field(default=480, ge=10, le=100_000)
    knowledge_cutoffs: dict[str, KnowledgeCutoff] = Field(
        default_factory=lambda: dict(DEFAULT_CUTOFFS)
    )

    @field_validator("knowledge_cutoffs", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        # Entries given in config add to or replace the shipped ones; they never drop them.
        if isinstance(value, dict):
            shipped = {k: v.model_dump(mode="json") for k, v in DEFAULT_CUTOFFS.items()}
            return {**shipped, **value}
        return value


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
    gemini: GeminiConfig = GeminiConfig()
    exit_review: ExitReviewConfig = ExitReviewConfig()
    notify: NotifyConfig = NotifyConfig()
    variant: VariantConfig = VariantConfig()
    report: ReportConfig = ReportConfig()
    # Set by `llm-oracle record`. Live, a batch answers within timeout_s and requests still
    # waiting for a rate-limit or concurrency slot then get the fallback; recording over history,
    # every request waits for its slot and only the call itself is bounded by timeout_s.
    recording: bool = False
    progress: bool = Field(default=False, description="progress bar on stderr (or env)")

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
    return validate_strict(OracleConfig, raw, section)


def validate_strict(model: type[M], raw: dict[str, Any], section: str) -> M:
    """Validate a config block strictly, as the JSON it came from.

    JSON mode keeps strict types (no "no" as false, no true as 1) while reading enums and paths
    from their string form; a value JSON cannot hold (a Python object) is refused by name.
    """
    try:
        text = json.dumps(raw, default=_plain, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise OracleConfigError(f"invalid '{section}' config: {exc}") from None
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise OracleConfigError(format_errors(section, exc, model)) from None


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not a JSON value")
