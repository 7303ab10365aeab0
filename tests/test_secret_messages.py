"""A key echoed by the endpoint never reaches the bot's messages (Telegram / webhooks).

The real `freqtrade trade --dry-run` (Bybit emulator + fake Gemini on 127.0.0.1) sends what the
strategy passes to `dp.send_msg` through Freqtrade's RPC; the webhook receiver stands in for
Telegram (same strategy messages, same RPC queue). The fake repeats the API key in the answer's
`reasoning` or in `modelVersion`. The oracle-level test (tests/test_gemini_secrets.py) covers the
journal columns and events; this one follows the text out of the bot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_gemini import Echo, start_fake_gemini
from tests.test_dryrun_e2e import API_KEY, WebhookReceiver, dry_run_bot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession"),
]


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.mark.parametrize(
    ("where", "shows"),
    [
        # A usable answer: its reasoning is in the decision message, with the key redacted.
        ("reasoning", "the key is [redacted], escaped: [redacted]"),
        # Another model "answered": the fallback is used and the event names the model served.
        ("model_version", "answered by model 'gemini-3.8-flash-[redacted]'"),
    ],
    ids=["reasoning", "model_version"],
)
def test_a_key_echoed_by_the_endpoint_is_in_no_message_the_bot_sends(
    tmp_path: Path, hook: WebhookReceiver, where: str, shows: str
) -> None:
    with start_fake_gemini(API_KEY) as fake:
        fake.default = Echo(where)
        with dry_run_bot(tmp_path, fake, hook, timeout_s=10, held=True) as (
            proc,
            log,
            _journal,
            _db,
        ):
            assert fake.wait_for(requests=1, responded=1, timeout=240), log.read_text()[-3000:]
            # The field reached the message, scrubbed (not dropped).
            hook.wait_for(shows, 60)
            decision = hook.wait_for("llm_oracle BTC/USDT:USDT: ", 30)
            if where == "model_version":
                assert "model_mismatch" in decision and "no entry" in decision
            assert proc.poll() is None
        # dry_run_bot itself asserts the key is in neither the bot's log nor the journal file.
    assert hook.messages and all(API_KEY not in m for m in hook.messages), hook.messages
