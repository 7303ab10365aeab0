"""What the report asks the Freqtrade runner to do, and what the runner hands back (JSON)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from llm_oracle.models import OracleDecision, Side

_MODEL = ConfigDict(extra="forbid")


class ExtraVariant(BaseModel):
    """A variant given from outside (tests: a clairvoyant table); the table's path."""

    model_config = _MODEL
    name: str
    table: str


class RunSpec(BaseModel):
    model_config = _MODEL
    freqtrade_args: list[str]  # `freqtrade backtesting` arguments (configs, timerange, ...)
    workdir: str  # decision tables are written here
    placebo_seeds: int = Field(ge=0)
    horizon_candles: int = Field(ge=1)
    ledger: bool = (
        True  # False: no candidate is valued (the "ledger never changes a request" check)
    )
    review_miss: str = "hold"
    check_identity: bool = False  # also backtest the recorded decisions as a variant table
    workers: int = Field(default=1, ge=1, le=64)  # processes for the variants' backtests
    extra: list[ExtraVariant] = []


class LedgerOutcome(BaseModel):
    """The trade a candidate would have been under the money rules (1x, no oracle inputs)."""

    model_config = _MODEL
    r: float  # net result in multiples of the risk at the stop (fees included)
    net_return: float  # net of both fees, fraction of the position
    exit: str  # stop | target | trailing | horizon | end_of_data
    candles: int


class Candidate(BaseModel):
    model_config = _MODEL
    pair: str
    date: datetime  # the signal candle (open time)
    side: Side
    key: str  # the source's decision key
    decision: OracleDecision | None  # None: the source never answered (a miss)
    ledger: LedgerOutcome | None = None


class TradeRow(BaseModel):
    model_config = _MODEL
    pair: str
    open_date: datetime
    close_date: datetime
    is_short: bool
    profit_abs: float
    profit_ratio: float
    exit_reason: str
    enter_tag: str
    leverage: float


class VariantRun(BaseModel):
    model_config = _MODEL
    name: str
    kind: str  # oracle | identity | prefilter | inverted | placebo | extra
    seed: int | None = None
    trades: list[TradeRow]
    final_balance: float
    seconds: float
    oracle: dict[str, float] = {}  # oracle / variant counters (misses, review hits, ...)
    asked: list[str] = []  # the oracle's run: the keys of every question it asked


class RunnerOutput(BaseModel):
    model_config = _MODEL
    start: datetime
    end: datetime
    timeframe: str
    stake_currency: str
    wallet: float  # the starting wallet (Freqtrade's profit % is relative to it)
    risk_equity: float  # what the stake sizing sees at the start: 1 R = risk_per_trade x this
    recorded: int  # decisions the source recorded during this report (free local backends)
    fee: float
    min_confidence: float
    risk_per_trade: float
    source_backend: str
    source_model: str
    pairs: list[str]
    candidates: list[Candidate]
    asked_keys: list[str]  # every question the oracle's backtest asked (entries and reviews)
    variants: list[VariantRun]
    identity_matches_oracle: bool | None  # None: not checked
    seconds: dict[str, float]
