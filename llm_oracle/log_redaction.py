"""Keep credentials out of every log record the process creates, whoever logs them.

Exchanges echo credentials in error messages (Bybit's "error sign!" answer carries the signed
origin string, API key included), and Freqtrade logs such messages while it loads markets, before
any strategy code runs. So redaction sits in the log record factory, which every logger and
every handler (console, `--logfile`, the REST API's log buffer) goes through, and is switched on
from the `log_config` block of config.json: Freqtrade builds logging from it first of all.

Secrets come from the environment variables the README tells users to set, read at each record
(a reload may change them), plus any the strategy adds from its config.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from llm_oracle.secrets import Scrubber

ENV_SECRETS = (
    "FREQTRADE__EXCHANGE__KEY",
    "FREQTRADE__EXCHANGE__SECRET",
    "FREQTRADE__EXCHANGE__PASSWORD",
    "FREQTRADE__API_SERVER__PASSWORD",
    "FREQTRADE__API_SERVER__JWT_SECRET_KEY",
    "FREQTRADE__API_SERVER__WS_TOKEN",
    "FREQTRADE__TELEGRAM__TOKEN",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
)

SCRUBBER = Scrubber(*(lambda name=name: os.environ.get(name) for name in ENV_SECRETS))


def scrub_record(record: logging.LogRecord, scrubber: Scrubber = SCRUBBER) -> None:
    """Replace secrets in the record's message and traceback text, in place.

    Never raises: a malformed log call ("%s %s" with one argument) must fail in the handler, as
    logging does, not in the code that logged it.
    """
    try:
        _scrub(record, scrubber)
    except Exception:  # logging errors belong to the handler, not the caller
        return


def _scrub(record: logging.LogRecord, scrubber: Scrubber) -> None:
    if not scrubber.secrets():
        return
    if record.exc_info:
        # Render the traceback now, so its text can be scrubbed like the message.
        record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
    if record.exc_text:
        record.exc_text = scrubber.scrub(record.exc_text)
    message = record.getMessage()
    clean = scrubber.scrub(message)
    if clean != message:
        record.msg, record.args = clean, None


_installed = False


def install_record_factory() -> None:
    """Scrub every record at creation (idempotent; wraps the factory in place)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scrub_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def add_secrets(*secrets: str | None) -> None:
    """Secrets known only from config (e.g. the API password), redacted from now on."""
    for secret in secrets:
        SCRUBBER.add(secret)
    install_record_factory()


class EnvironmentRedactor(logging.Filter):
    """The `log_config` hook: `"filters": {"redact": {"()": "llm_oracle.log_redaction.
    EnvironmentRedactor"}}`. Building it installs the record factory; as a handler filter it
    also scrubs records made before that."""

    def __init__(self) -> None:
        super().__init__()
        install_record_factory()

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True
