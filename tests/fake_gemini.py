"""A fake Gemini endpoint on 127.0.0.1 speaking the real `generateContent` REST format.

The real google-genai client talks to it through `HttpOptions(base_url=...)`. Each test scripts
what the next requests get (a sequence, then a default), and reads back what arrived: path, body
JSON and headers (the API key value is replaced, so a recorded request never holds it).
Waiting is Event/Condition based, never sleep polling, so tests synchronise on what happened.

The Batch API too (`:batchGenerateContent`, then `GET batches/<id>` until done after
`batch_polls` polls; each inlined request answered by the next behaviour). Like the real API,
`modelVersion` names the model the request asked for (set `model_version` to
play a rerouted model), and `usageMetadata.serviceTier` the tier the request asked for
(`serviceTier`, google-genai's `GenerateContentConfig.service_tier`; standard when absent).
`SchemaRandom` is an independent model that follows the request's `responseSchema` and nothing
else: any enum value, any number in range (bounds included), null or absent where allowed, text
up to maxLength.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_VERSION = "gemini-fake-001"  # a model the tests never configure: a rerouted model
_PATH = re.compile(r"^/(v1beta|v1)/models/([^/:]+):generateContent$")
# The Batch API as google-genai 3.4 speaks it (Gemini Developer API): create, then poll.
_BATCH_CREATE = re.compile(r"^/(v1beta|v1)/models/([^/:]+):batchGenerateContent$")
_BATCH_GET = re.compile(r"^/(v1beta|v1)/batches/([^/?]+)$")
_BATCH_LIST = re.compile(r"^/(v1beta|v1)/batches(\?.*)?$")
USAGE = {
    "promptTokenCount": 400,
    "cachedContentTokenCount": 100,
    "candidatesTokenCount": 50,
    "thoughtsTokenCount": 30,
    "totalTokenCount": 480,
}


@dataclass(frozen=True)
class Recorded:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival

    @property
    def user_text(self) -> str:
        return str(self.body["contents"][0]["parts"][0]["text"])

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.body, sort_keys=True).encode()).hexdigest()


# --- behaviours: what one request gets -------------------------------------------------------
@dataclass(frozen=True)
class Ok:
    """A valid decision echoing the pre-filter side (entry) or 'hold' (exit review).

    The stop is 2 x the prompt's ATR (within 0.002..0.05) unless `stop_loss` fixes it.
    """

    confidence: float = 0.8
    stop_loss: float | None = None


@dataclass(frozen=True)
class Slow:
    seconds: float
    then: Any = Ok()


@dataclass(frozen=True)
class Hang:
    """No answer until `FakeGemini.release()` (or shutdown)."""


@dataclass(frozen=True)
class RateLimited:
    retry_delay: str = "0.2s"


@dataclass(frozen=True)
class ServerError:
    code: int = 500


@dataclass(frozen=True)
class Malformed:
    text: str = '{"action": "long", "confidence": 0.9, oops'


@dataclass(frozen=True)
class Truncated:
    text: str = '{"action": "long", "confidence": 0.8, "stop_loss": 0.0'


@dataclass(frozen=True)
class Blocked:
    reason: str = "SAFETY"


@dataclass(frozen=True)
class EchoKey:
    """A 400 whose message repeats the API key it received (some proxies do): must be scrubbed."""


@dataclass(frozen=True)
class Custom:
    """Any decision JSON (schema-valid but out of range, wrong side, ...)."""

    decision: dict[str, Any]


@dataclass(frozen=True)
class SchemaRandom:
    """An answer drawn from the request's responseSchema alone, seeded by the request."""

    seed: int = 0


@dataclass(frozen=True)
class Redirect:
    """A redirect to `location` + the same path (307 keeps the POST and its headers): a client
    must not follow it with the key."""

    location: str
    code: int = 307


@dataclass(frozen=True)
class Echo:
    """A valid-looking answer that repeats the API key in `where`: reasoning (also escaped and
    in an extra property), model_version, or raw (a non-JSON answer body)."""

    where: str = "reasoning"


@dataclass(frozen=True)
class Huge:
    """A valid decision whose text is `size` bytes long (the reasoning is padded)."""

    size: int = 200_000


Behaviour = (
    Ok
    | Slow
    | Hang
    | RateLimited
    | ServerError
    | Malformed
    | Truncated
    | Blocked
    | EchoKey
    | Custom
    | SchemaRandom
    | Redirect
    | Echo
    | Huge
)


def candidate_side(user_text: str) -> str | None:
    match = re.search(r"^pre-filter side: (long|short)$", user_text, re.MULTILINE)
    return match.group(1) if match else None


def atr_stop(user_text: str) -> float:
    match = re.search(r"ATR14 ([0-9.]+)%", user_text)
    atr = float(match.group(1)) / 100 if match else 0.0025
    return round(min(max(2 * atr, 0.002), 0.05), 5)


_TIER = threading.local()  # the tier the request being answered on this thread asked for


def _answer(text: str, model: str, finish: str = "STOP") -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": finish,
                "index": 0,
            }
        ],
        "usageMetadata": {**USAGE, "serviceTier": getattr(_TIER, "tier", "standard")},
        "modelVersion": model,
    }


def schema_instance(schema: dict[str, Any], rng: random.Random) -> Any:
    """A random value the (Gemini-subset) schema allows, bounds included."""
    if schema.get("nullable") and rng.random() < 0.15:
        return None
    kind = str(schema.get("type", "OBJECT")).upper()
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if kind == "OBJECT":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        order = schema.get("propertyOrdering") or list(properties)
        return {
            name: schema_instance(properties[name], rng)
            for name in order
            if name in required or rng.random() < 0.6
        }
    if kind in ("NUMBER", "INTEGER"):
        low = float(schema.get("minimum", -1e6))
        high = float(schema.get("maximum", 1e6))
        pick = rng.random()
        value = low if pick < 0.1 else high if pick < 0.2 else rng.uniform(low, high)
        return int(value) if kind == "INTEGER" else value
    if kind == "BOOLEAN":
        return rng.random() < 0.5
    if kind == "ARRAY":
        return [schema_instance(schema.get("items", {}), rng) for _ in range(rng.randint(0, 3))]
    longest = int(schema.get("maxLength", 200))
    length = longest if rng.random() < 0.05 else rng.randint(0, min(longest, 200))
    return "".join(rng.choice("abcdefghij klmnop.,;:") for _ in range(length))


def _error(code: int, status: str, message: str, details: list[Any] | None = None) -> Any:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


@dataclass
class FakeGemini:
    api_key: str
    default: Behaviour = field(default_factory=Ok)
    script: list[Behaviour] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    responded: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""
    model_version: str | None = None  # None: echo the requested model, like the real API
    # Batch jobs: name -> (model, inlined requests, polls so far); done after `batch_polls` GETs.
    batch_jobs: dict[str, tuple[str, list[dict[str, Any]], int]] = field(default_factory=dict)
    batch_polls: int = 2
    # The next this many job creations fail with this HTTP status (nothing is created).
    batch_create_failures: int = 0
    batch_create_status: int = 400
    # The next job creation creates the job, then its answer never comes (a lost response,
    # or `record` killed in between): the handler waits for `release()`.
    batch_create_hang: bool = False
    batch_display_names: dict[str, str] = field(default_factory=dict)
    # The state a finished job reports (Vertex also has JOB_STATE_PARTIALLY_SUCCEEDED).
    batch_final_state: str = "BATCH_STATE_SUCCEEDED"
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _release: threading.Event = field(default_factory=threading.Event)

    @property
    def batch_requests(self) -> list[dict[str, Any]]:
        """Every inlined request of every batch job created (each one is billed)."""
        with self._cond:
            return [r for _, requests, _ in self.batch_jobs.values() for r in requests]

    # --- test side -------------------------------------------------------------------------
    def then(self, *behaviours: Behaviour) -> FakeGemini:
        """Queue behaviours for the next requests; after them, `default` answers."""
        with self._cond:
            self.script.extend(behaviours)
        return self

    def release(self) -> None:
        self._release.set()

    def wait_for(self, *, requests: int = 0, responded: int = 0, timeout: float = 30) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: len(self.requests) >= requests and self.responded >= responded,
                timeout=timeout,
            )

    @property
    def count(self) -> int:
        with self._cond:
            return len(self.requests)

    # --- server side -----------------------------------------------------------------------
    def _next(self) -> Behaviour:
        with self._cond:
            return self.script.pop(0) if self.script else self.default

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        key_ok = headers.get("x-goog-api-key") == self.api_key
        if "x-goog-api-key" in headers:
            headers["x-goog-api-key"] = "<redacted>"
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"unparseable": raw.decode("utf-8", "replace")}
        with self._cond:
            self.requests.append(Recorded(handler.path, body, headers, time.monotonic()))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._cond.notify_all()
        try:
            match = _PATH.match(handler.path)
            if _BATCH_LIST.match(handler.path) and handler.command == "GET" and key_ok:
                self._send(handler, 200, self._batch_list())
                return
            batch = _BATCH_CREATE.match(handler.path) or _BATCH_GET.match(handler.path)
            if batch and key_ok:
                code, payload, hang = self._batch(handler.command, batch, body)
                if hang:
                    self._release.wait()
                    return  # the answer is lost: the client sees the connection drop
                self._send(handler, code, payload)
                return
            if not match:
                self._send(handler, 404, _error(404, "NOT_FOUND", f"no route {handler.path}"))
            elif not key_ok:
                self._send(handler, 403, _error(403, "PERMISSION_DENIED", "API key not valid."))
            else:
                model = self.model_version or match.group(2)
                tier = str(body.get("serviceTier", "standard")).lower()
                self._respond(handler, body, self._next(), self.api_key, model, tier)
        finally:
            with self._cond:
                self.in_flight -= 1
                self.responded += 1
                self._cond.notify_all()

    def _respond(
        self,
        handler: BaseHTTPRequestHandler,
        body: Any,
        how: Behaviour,
        key: str,
        model: str,
        tier: str = "standard",
    ) -> None:
        _TIER.tier = tier
        if isinstance(how, Slow):
            self._release.wait(how.seconds)
            how = how.then
        if isinstance(how, Hang):
            self._release.wait()
            how = Ok()
        if isinstance(how, RateLimited):
            details = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": how.retry_delay}
            ]
            self._send(handler, 429, _error(429, "RESOURCE_EXHAUSTED", "quota", details))
        elif isinstance(how, ServerError):
            status = {503: "UNAVAILABLE", 408: "DEADLINE_EXCEEDED", 501: "UNIMPLEMENTED"}
            code = how.code
            self._send(handler, code, _error(code, status.get(code, "INTERNAL"), "try again"))
        elif isinstance(how, Malformed):
            self._send(handler, 200, _answer(how.text, model))
        elif isinstance(how, Truncated):
            self._send(handler, 200, _answer(how.text, model, "MAX_TOKENS"))
        elif isinstance(how, Blocked):
            blocked = {
                "promptFeedback": {"blockReason": how.reason},
                "usageMetadata": {"promptTokenCount": 400, "totalTokenCount": 400},
                "modelVersion": model,
            }
            self._send(handler, 200, blocked)
        elif isinstance(how, EchoKey):
            message = f"API key {key} is not allowed for this model"
            self._send(handler, 400, _error(400, "INVALID_ARGUMENT", message))
        elif isinstance(how, Custom):
            self._send(handler, 200, _answer(json.dumps(how.decision), model))
        elif isinstance(how, SchemaRandom):
            schema = body["generationConfig"]["responseSchema"]
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            rng = random.Random(f"{how.seed}:{digest}")
            self._send(handler, 200, _answer(json.dumps(schema_instance(schema, rng)), model))
        elif isinstance(how, Redirect):
            handler.send_response(how.code)
            handler.send_header("Location", how.location + handler.path)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        elif isinstance(how, Echo):
            decision = self._echo_decision(body)
            if how.where == "reasoning":
                # Literally, JSON-escaped (\u0041...: only parsing reveals it), and as a key.
                escaped = "".join(f"\\u{ord(c):04x}" for c in key)
                decision["reasoning"] = "@"
                literal = f"the key is {key}, escaped: {escaped}"
                text = json.dumps(decision).replace('"@"', f'"{literal}"')
                text = text[:-1] + f', "{key}": 1}}'
                self._send(handler, 200, _answer(text, model))
            elif how.where == "model_version":
                self._send(handler, 200, _answer(json.dumps(decision), f"{model}-{key}"))
            else:
                self._send(handler, 200, _answer(f"not json, but the key: {key}", model))
        elif isinstance(how, Huge):
            decision = self._echo_decision(body)
            text = json.dumps(decision)
            decision["reasoning"] = "x" * max(0, how.size - len(text))
            self._send(handler, 200, _answer(json.dumps(decision), model))
        else:
            assert isinstance(how, Ok)
            self._send(handler, 200, _answer(json.dumps(self._echo_decision(body, how)), model))

    def _batch_list(self) -> dict[str, Any]:
        """`GET batches`: every job, newest first, with its display name (one page)."""
        with self._cond:
            names = list(reversed(self.batch_jobs))
            return {
                "operations": [
                    {
                        "name": n,
                        "metadata": {
                            "displayName": self.batch_display_names.get(n, ""),
                            "state": "BATCH_STATE_RUNNING",
                        },
                    }
                    for n in names
                ]
            }

    def _batch(
        self, method: str, match: re.Match[str], body: Any
    ) -> tuple[int, dict[str, Any], bool]:
        """Create a job (POST) or report it (GET), in the Gemini API's operation format:
        (HTTP status, payload, hang instead of answering)."""
        with self._cond:
            if method == "POST":
                if self.batch_create_failures > 0:
                    self.batch_create_failures -= 1
                    code = self.batch_create_status
                    return code, _error(code, "INVALID_ARGUMENT", "batch refused"), False
                name = f"batches/fake{len(self.batch_jobs) + 1}"
                inlined = body["batch"]["inputConfig"]["requests"]["requests"]
                self.batch_jobs[name] = (match.group(2), list(inlined), 0)
                self.batch_display_names[name] = str(body["batch"].get("displayName", ""))
                hang, self.batch_create_hang = self.batch_create_hang, False
                return 200, {"name": name, "metadata": {"state": "BATCH_STATE_PENDING"}}, hang
            name = f"batches/{match.group(2)}"
            if name not in self.batch_jobs:
                return 404, _error(404, "NOT_FOUND", "no such batch"), False
            model, inlined, polls = self.batch_jobs[name]
            self.batch_jobs[name] = (model, inlined, polls + 1)
            if polls + 1 < self.batch_polls:
                return 200, {"name": name, "metadata": {"state": "BATCH_STATE_RUNNING"}}, False
        responses = []
        for item in inlined:
            how = self._next()
            request = item["request"]
            if isinstance(how, SchemaRandom):
                schema = request["generationConfig"]["responseSchema"]
                digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
                text = json.dumps(schema_instance(schema, random.Random(f"{how.seed}:{digest}")))
            elif isinstance(how, Custom):
                text = json.dumps(how.decision)
            else:
                text = json.dumps(
                    self._echo_decision(request, how if isinstance(how, Ok) else None)
                )
            responses.append({"response": _answer(text, model), "metadata": item.get("metadata")})
        output = {"inlinedResponses": {"inlinedResponses": responses}}
        done = {"state": self.batch_final_state, "output": output}
        return 200, {"name": name, "metadata": done}, False

    @staticmethod
    def _echo_decision(body: Any, how: Ok | None = None) -> dict[str, Any]:
        how = how or Ok()
        text = body["contents"][0]["parts"][0]["text"]
        side = candidate_side(text)
        decision: dict[str, Any] = {
            "action": side or "hold",
            "confidence": how.confidence,
            "reasoning": "fake: echo the pre-filter",
        }
        if side:
            stop = how.stop_loss if how.stop_loss is not None else atr_stop(text)
            decision |= {"stop_loss": stop, "take_profit": round(2 * stop, 5)}
        return decision

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        try:
            handler.send_response(code)
            handler.send_header("Content-Type", "application/json; charset=UTF-8")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout, cancellation): nothing to answer


@contextmanager
def start_fake_gemini(api_key: str = "test-key-0123456789") -> Iterator[FakeGemini]:
    fake = FakeGemini(api_key=api_key)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            fake.handle(self)

        def do_GET(self) -> None:  # a client following a 302/303 comes back with GET
            fake.handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="fake-gemini", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        fake.release()  # let hanging handlers finish
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
