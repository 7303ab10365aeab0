"""Keep secrets out of everything the oracle stores, logs or sends.

A provider may echo the API key anywhere: in an error message, in the answer's reasoning, in the
model version, in a raw body. Every text that leaves a backend passes through a `Scrubber`, and
the oracle scrubs again at its own boundary (journal rows, log lines, events): two independent
layers, so one missed field is not a leak.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

REDACTED = "[redacted]"
_MIN_SECRET = 8  # shorter strings are not secrets worth the risk of mangling ordinary text


class Scrubber:
    """Replaces known secrets (and their URL-encoded forms) with `[redacted]`."""

    def __init__(self, *sources: Callable[[], str | None]) -> None:
        self._sources = sources
        self._known: set[str] = set()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= _MIN_SECRET:
            self._known.add(secret)

    def secrets(self) -> set[str]:
        found = set(self._known)
        for source in self._sources:  # read each time: the environment may change
            value = source()
            if value and len(value) >= _MIN_SECRET:
                found.add(value)
        return found

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets(), key=len, reverse=True):
            for form in {secret, quote(secret, safe="")}:
                text = text.replace(form, REDACTED)
        return text

    def scrub_optional(self, text: str | None) -> str | None:
        return None if text is None else self.scrub(text)

    def scrub_json(self, value: Any) -> Any:
        """Every string (keys included) of a parsed JSON value, scrubbed."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(str(k)): self.scrub_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub_json(v) for v in value]
        return value
