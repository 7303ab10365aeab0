"""Limits on what the oracle may spend, one small module each.

- `rate`: requests per minute (async token bucket), applied to every request a backend sends.
- `breaker`: stop calling after K consecutive failures, for a cooldown.
- `budget`: daily caps on requests, tokens and USD, seeded from the journal.
- `guard`: the oracle's gate combining breaker and budget, announcing each switch once.
- `shared`: the daily budget of every process on a journal (reservations); imported
  directly, not from here (it needs the journal, and the backends import this package).
Deadlines are absolute `loop.time()` values; None means "no deadline" (recording).
"""

from llm_oracle.limits.breaker import CircuitBreaker
from llm_oracle.limits.budget import DailyBudget, Spend
from llm_oracle.limits.guard import Refusal, SpendGuard
from llm_oracle.limits.rate import RateLimiter, acquire_before

__all__ = [
    "CircuitBreaker",
    "DailyBudget",
    "RateLimiter",
    "Refusal",
    "Spend",
    "SpendGuard",
    "acquire_before",
]
