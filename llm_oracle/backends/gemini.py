"""Gemini backend: the real google-genai async client, structured output, an own retry policy.

- The client is created on first use, so configs that never call Gemini (a replay that holds on a
  miss) need no API key. The key comes from GOOGLE_API_KEY or GEMINI_API_KEY (the SDK's order).
- Secrets: the key is scrubbed from every text this module hands out (answer text and reasoning,
  model version, raw response, error details), whatever the endpoint chose to echo. Redirects
  are never followed (the key travels in a header that HTTP clients forward to the new host),
  and the config only allows https, or http to this machine.
- Every question gets its own response schema (`llm_oracle.schema`): a model that follows it
  cannot give an answer the checks below reject.
- The SDK retries nothing (its retry is set to one attempt, which also disables its implicit
  1-10 s reconnect sleep); this module retries what Google's SDK would retry (408, 429, 500, 502,
  503, 504 and transport errors) with exponential backoff and jitter, honours the 429's
  RetryInfo `retryDelay`, and never sleeps or waits past the deadline, which it owns.
- Every answer is validated: size, the model that answered, JSON, the `OracleDecision` model and
  `sanity` (side, stop range, fees). Failures keep the (scrubbed, capped) raw text, usage and
  cost: a bad answer was still paid for.
- google-genai is imported lazily: importing `llm_oracle` must stay cheap for rules/replay users.
- `tier: flex` sends `serviceTier: flex` (google-genai 3.4: `GenerateContentConfig.service_tier`)
  and prices the answer at the tier's discount. Every retry first passes `retry_gate` (set by the
  oracle: the shared daily budget, and a recorder that was told to stop), so no request goes
  out that the budget did not reserve.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from llm_oracle.backends.base import Backend, BackendIdentity, BackendResult, failure
from llm_oracle.config import TIER_PRICE_FACTOR, GeminiConfig, GeminiTier, ModelPrice
from llm_oracle.limits.rate import RateLimiter
from llm_oracle.models import ErrorKind, OracleDecision, OracleRequest, Usage
from llm_oracle.prompt import PROMPT_VERSION, canonical_settings, render
from llm_oracle.sanity import check_decision
from llm_oracle.schema import SCHEMA_VERSION, answer_fields, answer_schema
from llm_oracle.secrets import Scrubber

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

logger = logging.getLogger(__name__)

API_KEY_ENV = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
_DETAIL_MAX = 600  # error_detail is for humans; the raw response column keeps the full text
_REFUSED_KEEP = 2048  # of an answer refused for its size, the journal keeps this much
# What Google's SDK retries (HttpRetryOptions' default list), besides transport errors.
RETRIED_CODES = frozenset({408, 429, 500, 502, 503, 504})
# Finish reasons that mean the provider refused to answer (content policy), not a malfunction.
_BLOCK_REASONS = {
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "LANGUAGE",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
# A revision suffix of the same model ("-001", "-09-2025"): digits and dashes only.
_REVISION = re.compile(r"^[0-9]+(?:-[0-9]+)*$")


def api_key_from_env(env: Any = None) -> str | None:
    env = os.environ if env is None else env
    return next((env[name] for name in API_KEY_ENV if env.get(name)), None)


def cost_usd(usage: Usage, price: ModelPrice, factor: float = 1.0) -> float:
    """USD for one response: fresh and cached prompt tokens, output + thinking as output;
    `factor` is the service tier's share of the standard price."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    total = (
        (usage.prompt_tokens - cached) * price.input
        + cached * cached_price
        + (usage.output_tokens + usage.thinking_tokens) * price.output
    )
    return total * factor / 1_000_000


def retry_delay_s(details: Any) -> float | None:
    """The `retryDelay` of a google.rpc.RetryInfo in an error body, in seconds."""
    error = details.get("error", details) if isinstance(details, dict) else None
    items = error.get("details") if isinstance(error, dict) else None
    for item in items if isinstance(items, list) else ():
        if not (isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo")):
            continue
        delay = item.get("retryDelay")
        if isinstance(delay, str) and (match := _DURATION.match(delay)):
            return float(match.group(1))
        if isinstance(delay, dict):  # {"seconds": .., "nanos": ..} in some encodings
            return float(delay.get("seconds", 0)) + float(delay.get("nanos", 0)) / 1e9
    return None


def same_model(configured: str, served: str | None) -> bool:
    """Did the configured model answer? Unknown (no modelVersion) counts as yes.

    The served id may be the configured one, with a `models/` prefix, or a revision of it
    (`gemini-2.5-flash-001`); anything else (`gemini-2.5-flash-lite`, a rerouted newer model) is
    another model whose answers must not be mixed with the configured model's.
    """
    if not served:
        return True
    served = served.removeprefix("models/")
    if served == configured:
        return True
    rest = served.removeprefix(f"{configured}-")
    return rest != served and bool(_REVISION.match(rest))


def response_schema(request: OracleRequest, config: GeminiConfig) -> types.Schema:
    """This question's response schema as google-genai's `types.Schema`.

    Written out instead of passing the pydantic model: the SDK would forward the model's
    `additionalProperties: false` (extra="forbid"), which the Gemini API rejects with a 400.
    """
    from google.genai import types

    return types.Schema.model_validate(answer_schema(request, config.stop_bounds))


def gemini_settings(config: GeminiConfig) -> str:
    """What besides prompt, model and request can change a Gemini answer: part of the key."""
    return canonical_settings(
        {
            "schema": SCHEMA_VERSION,
            "api_version": config.api_version,
            "temperature": config.temperature,
            "seed": config.seed,
            "max_output_tokens": config.max_output_tokens,
            "thinking_level": config.thinking_level.value if config.thinking_level else None,
            "thinking_budget": config.thinking_budget,
            # The stop bounds shape every entry's schema (and what is accepted).
            "stop_bounds": config.stop_bounds.model_dump(mode="json"),
        }
    )


class GeminiBackend(Backend):
    def __init__(
        self,
        config: GeminiConfig,
        timeout_s: float,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.identity = BackendIdentity(
            "gemini", config.model, PROMPT_VERSION, settings=gemini_settings(config)
        )
        self.limits = config.limits
        self.max_invalid_answers = config.max_invalid_answers
        self.timeout_s = timeout_s
        self._rate = RateLimiter(config.limits.rpm, config.limits.rpm_burst)
        self._rng = rng or random.Random()
        self._client: genai.Client | None = None
        self.scrubber = Scrubber(api_key_from_env)
        self._no_key_logged = False
        # Asked before every retry: None lets it go, a text says why not (set by the oracle).
        self.retry_gate: Callable[[], Awaitable[str | None]] | None = None
        self.price_factor = TIER_PRICE_FACTOR[config.tier]

    # --- client, lazily ----------------------------------------------------------------------
    def client(self) -> genai.Client | None:
        """The configured client (None without an API key), e.g. for batch jobs."""
        return self._client_or_none()

    def _client_or_none(self) -> genai.Client | None:
        if self._client is not None:
            return self._client
        key = api_key_from_env()
        if key is None:
            if not self._no_key_logged:
                self._no_key_logged = True
                logger.error(
                    "gemini: no API key; set %s. Every Gemini decision is answered by the "
                    "fallback until one is set.",
                    " or ".join(API_KEY_ENV),
                )
            return None
        from google import genai
        from google.genai import types

        self.scrubber.add(key)
        # Never follow a redirect: the key is a header (x-goog-api-key), and aiohttp and httpx
        # only drop Authorization on a cross-host redirect. A 3xx comes back as an error. The
        # SDK hands each client only the arguments its request/constructor accepts.
        no_redirects = {"allow_redirects": False, "follow_redirects": False}
        self._client = genai.Client(
            api_key=key,
            http_options=types.HttpOptions(
                base_url=self.config.base_url or None,
                api_version=self.config.api_version,
                timeout=int(self.timeout_s * 1000),
                # One attempt: retries are ours (deadline-aware); this also turns off the SDK's
                # silent 1-10 s sleep-and-retry on aiohttp connection errors.
                retry_options=types.HttpRetryOptions(attempts=1),
                async_client_args=dict(no_redirects),
                client_args={"follow_redirects": False},
            ),
        )
        return self._client

    def generation_config(self, system: str, request: OracleRequest) -> types.GenerateContentConfig:
        from google.genai import types

        cfg = self.config
        thinking = None
        if cfg.thinking_level is not None:
            thinking = types.ThinkingConfig(thinking_level=cfg.thinking_level.value.upper())
        elif cfg.thinking_budget is not None:
            thinking = types.ThinkingConfig(thinking_budget=cfg.thinking_budget)
        # None values are left out of the request: an unset temperature or seed is the model's
        # own default, not a value we chose.
        return types.GenerateContentConfig(
            system_instruction=system,
            response_mime_type="application/json",
            response_schema=response_schema(request, cfg),
            temperature=cfg.temperature,
            seed=cfg.seed,
            max_output_tokens=cfg.max_output_tokens,
            thinking_config=thinking,
            candidate_count=1,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            service_tier=(
                None if cfg.tier is GeminiTier.STANDARD else types.ServiceTier(cfg.tier.value)
            ),
        )

    def estimate_spend(
        self, request: OracleRequest | None, measured: Usage | None
    ) -> tuple[int, float]:
        """Tokens and USD one request is reserved with before its answer says: `measured` (the
        journal's mean answer of this model), else the prompt's length (~4 characters a token)
        and the whole `max_output_tokens`, at this tier's price. A retry (no request) costs
        as much as the measured answer, or the prompt guess of 1000 tokens."""
        usage = measured
        if usage is None:
            chars = 4000
            if request is not None:
                prompt = render(request)
                chars = len(prompt.system) + len(prompt.user)
            usage = Usage(prompt_tokens=-(-chars // 4), output_tokens=self.config.max_output_tokens)
        tokens = usage.prompt_tokens + usage.output_tokens + usage.thinking_tokens
        return tokens, cost_usd(usage, self.config.price, self.price_factor)

    def scrub(self, text: str) -> str:
        """Never let the key out, whatever an exception or a server chose to echo."""
        return self.scrubber.scrub(text)

    # --- one decision ------------------------------------------------------------------------
    async def decide(self, request: OracleRequest, deadline: float | None = None) -> BackendResult:
        client = self._client_or_none()
        if client is None:
            return failure(
                ErrorKind.AUTH, f"no API key: set {' or '.join(API_KEY_ENV)}", attempts=0
            )
        from google.genai import errors

        loop = asyncio.get_running_loop()
        prompt = render(request)
        gen_config = self.generation_config(prompt.system, request)
        retry = self.config.retry
        attempts = 0  # requests actually sent (a rate-limit refusal sends none)
        started: float | None = None
        last: BackendResult | None = None
        for attempt in range(retry.max_retries + 1):
            if not await self._rate.acquire(deadline):
                return last or failure(
                    ErrorKind.RATE_LIMITED,
                    f"local limit of {self.config.limits.rpm} requests/min: no slot before "
                    "the deadline",
                    attempts=0,
                )
            now = loop.time()
            if started is None:
                started = now
                own = now + self.timeout_s
                deadline = own if deadline is None else min(deadline, own)
            if deadline - now <= 0:
                return last or failure(ErrorKind.TIMEOUT, "deadline passed", attempts=attempts)
            attempts = attempt + 1
            sent = time.perf_counter()
            delay: float | None = None
            try:
                response = await asyncio.wait_for(
                    client.aio.models.generate_content(
                        model=self.config.model, contents=prompt.user, config=gen_config
                    ),
                    deadline - now,
                )
            except TimeoutError:
                if last is not None:
                    # A retry cut short by the deadline: the cause is the earlier failure, which
                    # is what the caller (and the circuit breaker) should see, whatever the load.
                    detail = f"{last.error_detail}; the retry was cut by the deadline"
                    return last.model_copy(
                        update={
                            "error_detail": self.scrub(detail)[:_DETAIL_MAX],
                            "attempts": attempts,
                            "latency_ms": (loop.time() - started) * 1000,
                        }
                    )
                return self._failed(
                    ErrorKind.TIMEOUT,
                    f"no answer within the deadline ({self.timeout_s:g} s per decision)",
                    attempts,
                    started,
                )
            except errors.APIError as exc:
                code = int(exc.code or 0)
                kind = _kind_of(code)
                last = self._failed(kind, _describe(exc), attempts, started)
                if code not in RETRIED_CODES:
                    return last
                if code == 429:
                    delay = retry_delay_s(exc.details)
            except (OSError, *_transport_errors()) as exc:
                last = self._failed(ErrorKind.TRANSPORT, _describe(exc), attempts, started)
            else:
                latency_ms = (time.perf_counter() - sent) * 1000
                return self.interpret(response, request, attempts=attempts, latency_ms=latency_ms)
            if attempt == retry.max_retries:
                break
            wait = self._backoff(attempt, delay)
            if loop.time() + wait >= deadline:
                detail = f"{last.error_detail}; a retry in {wait:.2f} s would pass the deadline"
                return last.model_copy(update={"error_detail": self.scrub(detail)[:_DETAIL_MAX]})
            logger.debug("gemini: %s, retry in %.2f s", last.error_kind, wait)
            await asyncio.sleep(wait)
            if self.retry_gate is not None and (refused := await self.retry_gate()) is not None:
                detail = f"{last.error_detail}; no retry: {refused}"
                return last.model_copy(update={"error_detail": self.scrub(detail)[:_DETAIL_MAX]})
        assert last is not None
        return last

    def _backoff(self, attempt: int, server_delay: float | None) -> float:
        retry = self.config.retry
        if server_delay is not None:
            # The server said when: never earlier, a little later so clients do not stampede.
            return server_delay * (1.0 + self._rng.uniform(0.0, retry.jitter))
        base = min(retry.max_backoff_s, retry.initial_backoff_s * 2**attempt)
        return max(0.0, base * (1.0 + self._rng.uniform(-retry.jitter, retry.jitter)))

    def _failed(
        self,
        kind: ErrorKind,
        detail: str,
        attempts: int,
        started: float,
    ) -> BackendResult:
        latency_ms = (asyncio.get_running_loop().time() - started) * 1000
        return failure(
            kind, self.scrub(detail)[:_DETAIL_MAX], attempts=attempts, latency_ms=latency_ms
        )

    # --- reading an answer -------------------------------------------------------------------
    def interpret(
        self, response: Any, request: OracleRequest, *, attempts: int, latency_ms: float
    ) -> BackendResult:
        """Map a 200 response to a decision or a failure kind; usage and cost either way."""
        usage = _usage(response.usage_metadata)
        served = response.model_version
        common: dict[str, Any] = {
            "usage": usage,
            "cost_usd": cost_usd(usage, self.config.price, self.price_factor),
            "latency_ms": latency_ms,
            "model_version": self.scrub(str(served))[:200] if served else None,
            "attempts": attempts,
        }
        candidates = response.candidates or []
        finish = _name(candidates[0].finish_reason) if candidates else None
        text = _text(response)
        raw = text if text else _dump(response)
        cap = self.config.max_answer_bytes
        size = len(raw.encode("utf-8", "replace"))
        if size > cap:
            kept = self.scrub(raw[:_REFUSED_KEEP])
            return failure(
                ErrorKind.ANSWER_TOO_LARGE,
                f"answer of {size} bytes refused (gemini.max_answer_bytes {cap})",
                raw_response=f"{kept}... [{size} bytes, refused and not stored]",
                **common,
            )
        raw = self.scrub(raw)

        def bad(kind: ErrorKind, detail: str) -> BackendResult:
            return failure(kind, self.scrub(detail)[:_DETAIL_MAX], raw_response=raw, **common)

        if not same_model(self.config.model, common["model_version"]):
            return bad(
                ErrorKind.MODEL_MISMATCH,
                f"answered by model {common['model_version']!r}, not the configured "
                f"{self.config.model!r} (retired or rerouted?): its answers are not used or "
                "stored as the configured model's; set gemini.model (and its price) to the "
                "model you want",
            )
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            reason = _name(feedback.block_reason)
            return bad(ErrorKind.BLOCKED, f"prompt blocked: {reason}")
        if not candidates:
            return bad(ErrorKind.INVALID_JSON, "response without candidates")
        if finish in _BLOCK_REASONS:
            return bad(ErrorKind.BLOCKED, f"answer blocked: finishReason {finish}")
        if finish == "MAX_TOKENS":
            return bad(
                ErrorKind.TRUNCATED,
                f"finishReason MAX_TOKENS at max_output_tokens={self.config.max_output_tokens}",
            )
        if not text:
            return bad(ErrorKind.INVALID_JSON, f"no text in the answer (finishReason {finish})")
        try:
            data = json.loads(raw)  # the scrubbed text: reasoning cannot carry the key either
        except json.JSONDecodeError as exc:
            return bad(ErrorKind.INVALID_JSON, f"not JSON: {exc}")
        if not isinstance(data, dict):
            return bad(ErrorKind.INVALID_JSON, f"not a JSON object: {type(data).__name__}")
        # Again after parsing: a JSON escape (\u0041...) would have hidden the key from the text.
        data = self.scrubber.scrub_json(data)
        # Keys this question's schema does not have are ignored, not fatal: the schema cannot
        # forbid them, and they carry nothing we act on.
        allowed = answer_fields(request)
        try:
            decision = OracleDecision.model_validate(
                {k: v for k, v in data.items() if k in allowed}
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors()
            )
            return bad(ErrorKind.INVALID_DECISION, f"decision out of range: {problems}")
        problem = check_decision(decision, request, self.config.stop_bounds)
        if problem is not None:
            return bad(ErrorKind.INVALID_DECISION, problem)
        return BackendResult(decision=decision, raw_response=raw, **common)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aio.aclose()


def _kind_of(code: int) -> ErrorKind:
    if code == 429:
        return ErrorKind.RATE_LIMITED
    if code == 408:
        return ErrorKind.TIMEOUT  # the provider's own request timeout
    if code in (401, 403):
        return ErrorKind.AUTH
    if 500 <= code < 600:
        return ErrorKind.SERVER_ERROR
    return ErrorKind.CLIENT_ERROR  # other 4xx, and a 3xx: a redirect we refuse to follow


def _transport_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    try:
        import aiohttp

        found.append(aiohttp.ClientError)
    except ImportError:  # the SDK falls back to httpx without aiohttp
        pass
    try:
        import httpx

        found.append(httpx.TransportError)
    except ImportError:
        pass
    return tuple(found)


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None)
    message = getattr(exc, "message", None)
    if code is not None and 300 <= int(code) < 400:
        return f"{code} redirect refused: redirects are never followed with the API key"
    if code is not None and (status or message):
        return f"{code} {status or ''}: {message or ''}".strip()
    return f"{type(exc).__name__}: {exc}"


def _name(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value)).upper()


def _text(response: Any) -> str | None:
    candidates = response.candidates or []
    if not candidates or candidates[0].content is None or not candidates[0].content.parts:
        return None
    parts = [p.text for p in candidates[0].content.parts if p.text is not None and not p.thought]
    return "".join(parts) or None


def _dump(response: Any) -> str:
    # Everything the provider said, minus transport details (headers) the journal does not need.
    return str(
        response.model_dump_json(
            exclude_none=True,
            exclude={"sdk_http_response", "automatic_function_calling_history", "parsed"},
        )
    )


def _usage(meta: Any) -> Usage:
    if meta is None:
        return Usage()
    return Usage(
        prompt_tokens=meta.prompt_token_count or 0,
        output_tokens=meta.candidates_token_count or 0,
        thinking_tokens=meta.thoughts_token_count or 0,
        cached_tokens=meta.cached_content_token_count or 0,
    )
