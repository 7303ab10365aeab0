"""llm_oracle: an LLM decision oracle for trading strategies, with a journal that is also its cache.

Plain Python, no Freqtrade import: the strategy in `strategies/` adapts Freqtrade to this package.
"""

from llm_oracle.backends import (
    Backend,
    BackendIdentity,
    BackendResult,
    GeminiBackend,
    build_backend,
)
from llm_oracle.config import OracleConfig, OracleConfigError, load_config
from llm_oracle.features import FrameArrays, entry_requests, exit_review_at, exit_review_request
from llm_oracle.journal import Journal, JournalError, JournalProblem, check_journal
from llm_oracle.models import (
    Action,
    DecisionSource,
    ErrorKind,
    Fees,
    JournalEntry,
    OracleDecision,
    OracleRequest,
    Position,
    Purpose,
    Side,
)
from llm_oracle.oracle import Oracle, OracleStats, Outcome, open_oracle
from llm_oracle.progress import Progress
from llm_oracle.prompt import PROMPT_VERSION, decision_key, render

__all__ = [
    "PROMPT_VERSION",
    "Action",
    "Backend",
    "BackendIdentity",
    "BackendResult",
    "DecisionSource",
    "ErrorKind",
    "Fees",
    "FrameArrays",
    "GeminiBackend",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalProblem",
    "Oracle",
    "OracleConfig",
    "OracleConfigError",
    "OracleDecision",
    "OracleRequest",
    "OracleStats",
    "Outcome",
    "Position",
    "Progress",
    "Purpose",
    "Side",
    "build_backend",
    "check_journal",
    "decision_key",
    "entry_requests",
    "exit_review_at",
    "exit_review_request",
    "load_config",
    "open_oracle",
    "render",
]
