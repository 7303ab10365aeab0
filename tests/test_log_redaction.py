"""Credentials never reach a log handler, whichever logger writes them and however."""

from __future__ import annotations

import io
import logging
import logging.config

import pytest

from llm_oracle import log_redaction

KEY, SECRET = "bybitKEY1234abcd", "s3cr3t-value-0987654321"


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREQTRADE__EXCHANGE__KEY", KEY)
    monkeypatch.setenv("FREQTRADE__EXCHANGE__SECRET", SECRET)


def test_log_config_filter_scrubs_every_logger_and_traceback(credentials: None) -> None:
    stream = io.StringIO()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"redact": {"()": "llm_oracle.log_redaction.EnvironmentRedactor"}},
            "handlers": {
                "mem": {"class": "logging.StreamHandler", "stream": stream, "filters": ["redact"]}
            },
            "loggers": {"redaction-test": {"handlers": ["mem"], "level": "INFO"}},
        }
    )
    child = logging.getLogger("redaction-test.ccxt")
    child.warning('{"retMsg":"error sign! origin_string[1700000000000%s5000]"}', KEY)
    try:
        raise RuntimeError(f"auth failed for {SECRET}")
    except RuntimeError:
        child.exception("exchange init failed")
    text = stream.getvalue()
    assert KEY not in text and SECRET not in text
    assert "origin_string[1700000000000[redacted]5000]" in text
    assert "auth failed for [redacted]" in text and "Traceback" in text


def test_records_are_scrubbed_at_creation_for_any_handler(credentials: None) -> None:
    log_redaction.install_record_factory()
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger = logging.getLogger("redaction-test-2")
    logger.addHandler(Keep())
    logger.propagate = False
    logger.error("key=%s", KEY)
    log_redaction.add_secrets("config-only-password-123")
    logger.error("password config-only-password-123")
    assert [r.getMessage() for r in seen] == ["key=[redacted]", "password [redacted]"]
