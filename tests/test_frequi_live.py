"""FreqUI's data and the oracle's messages from a real dry-run (`freqtrade trade --dry-run`).

One bot on the Bybit emulator and the fake Gemini, with the REST API (as FreqUI uses it) and a
webhook receiver on 127.0.0.1, shows:
- `pair_candles` holds the oracle's confidence on earlier candles, not just the newest: on the
  candidate after the next candle closed (the strategy's memory), on candidates asked before
  the bot started (the journal), and again after a restart (the journal);
- the open trade's oracle stop and target as price lines, and its reasoning as trade custom data;
- the webhook gets a short message per decision and the daily summary, whose numbers are the
  journal's; a restart on the same day does not send the summary again.

The test waits for one real candle boundary (at most 3 minutes): the candle feed follows the
wall clock once released. A run that straddles 00:00 UTC would see a new day's summary.
"""

from __future__ import annotations

import base64
import json
import socket
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llm_oracle import load_config, open_oracle
from llm_oracle.features import entry_requests
from llm_oracle.models import Fees, Side
from tests.fake_gemini import USAGE, FakeGemini, ServerError, start_fake_gemini
from tests.freqtrade_run import ROOT
from tests.live_bot import PAIR, LiveBot, live_bot, strategy_candidates

pytestmark = pytest.mark.integration

API_KEY = "AIzaFAKE-frequi-test-key-0123456789"
USER = "freqtrader"
PASSWORD = "frequi-test-" + "p4ss" * 6
JWT_SECRET = "frequi-test-jwt-" + "s3cr3t" * 6
FEES = Fees(maker=0.0001, taker=0.0006)  # ccxt's Bybit market fees: what the strategy reads
TOKENS_PER_CALL = USAGE["promptTokenCount"] + USAGE["candidatesTokenCount"]
TOKENS_PER_CALL += USAGE["thoughtsTokenCount"]


class Webhook:
    """Freqtrade's webhook posts, as JSON, with the time each arrived."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, dict[str, Any]]] = []
        self._cond = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with hook._cond:
                    hook.posts.append((time.time(), json.loads(body)))
                    hook._cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def texts(self, needle: str) -> list[tuple[float, str]]:
        with self._cond:
            return [(t, p["text"]) for t, p in self.posts if needle in p.get("text", "")]

    def wait_for(self, needle: str, timeout: float) -> tuple[float, str]:
        with self._cond:
            self._cond.wait_for(lambda: self.texts(needle), timeout=timeout)
        found = self.texts(needle)
        assert found, f"no webhook text containing {needle!r}: {self.posts}"
        return found[0]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def hook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    """Freqtrade's REST API as FreqUI uses it: basic auth once for a JWT, then Bearer."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"
        self._open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open
        self._token: str | None = None

    def _call(self, request: urllib.request.Request) -> Any:
        with self._open(request, timeout=10) as response:
            return json.loads(response.read())

    def login(self) -> None:
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            f"{self.base}/token/login", method="POST", headers={"Authorization": f"Basic {basic}"}
        )
        self._token = self._call(request)["access_token"]

    def get(self, path: str) -> Any:
        if self._token is None:
            self.login()
        request = urllib.request.Request(
            f"{self.base}{path}", headers={"Authorization": f"Bearer {self._token}"}
        )
        return self._call(request)

    def try_get(self, path: str) -> Any:
        """None while the API is not up yet (the bot is starting)."""
        try:
            return self.get(path)
        except OSError:
            self._token = None
            return None

    def candles(self) -> dict[int, dict[str, Any]]:
        """The analysed 3m candles of the pair by open time (ms); {} before the first analysis."""
        data = self.try_get(f"/pair_candles?pair={PAIR}&timeframe=3m")
        if not data or not data.get("data"):
            return {}
        columns = data["columns"]
        at = columns.index("__date_ts")
        return {row[at]: dict(zip(columns, row, strict=True)) for row in data["data"]}


def journal_rows(journal: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def seed_journal(journal: Path, fake: FakeGemini, before_row: int) -> dict[int, float]:
    """Gemini's answers to the three candidates before `before_row`, asked before the bot runs
    (as a recording or an earlier run would): the first one fails with a server error.

    The requests are built like the bot builds them (same settings, fees and indicators), so
    they have the keys the bot will look up. Returns sample row -> confidence, of the answered.
    """
    block = json.loads((ROOT / "config.json").read_text())["llm_oracle"]
    block |= {"backend": "gemini", "journal_path": str(journal)}
    block["gemini"] = block["gemini"] | {
        "base_url": fake.url,
        "retry": {"max_retries": 0, "initial_backoff_s": 0.05},
    }
    frame = strategy_candidates()
    candidates = frame.index[(frame["long_c"] | frame["short_c"]) & (frame.index < before_row)]
    rows = [int(r) for r in candidates[-3:]]
    assert len(rows) == 3 and before_row - rows[0] < 900  # inside the bot's analysed frame
    sides = [Side.LONG if frame["long_c"].iat[r] else Side.SHORT for r in rows]
    asked = entry_requests(frame, rows, sides, FEES, timeframe="3m", n_candles=24)
    fake.then(ServerError())
    oracle = open_oracle(load_config(block), journal.parent)
    try:
        answers: dict[int, float] = {}
        for row, request in asked:  # one at a time: the server error hits the first
            [outcome] = oracle.decide_many([request])
            if outcome.error_kind is None:
                answers[row] = outcome.decision.confidence
    finally:
        oracle.close()
    assert len(answers) == 2, answers
    return answers


def summary_numbers(text: str) -> dict[str, str]:
    """'decisions 3 (...), calls 4, tokens 960, USD 0.0012' -> {'decisions': '3', ...}."""
    out = {}
    for name in ("decisions", "calls", "tokens", "USD"):
        out[name] = text.split(f" {name} ", 1)[1].split(" ", 1)[0].rstrip(",")
    return out


def test_frequi_sees_the_oracle_on_every_candle_and_the_webhook_gets_the_daily_summary(
    tmp_path: Path, hook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    journal = tmp_path / "journal.sqlite"
    port = free_port()
    api = Api(port)
    oracle = {
        "backend": "gemini",
        "journal_path": str(journal),
        "exit_review": {"enabled": True, "min_candles": 1, "every_candles": 1},
        # Due from 00:00 UTC: the first loop sends today's summary.
        "notify": {"decisions": True, "daily_summary_utc": "00:00"},
    }
    with start_fake_gemini(API_KEY) as fake:
        oracle["gemini"] = {"base_url": fake.url}
        with live_bot(
            tmp_path,
            start=False,
            dry_run=True,
            env={"GEMINI_API_KEY": API_KEY},
            llm_oracle=oracle,
            entry_pricing={"price_side": "other", "use_order_book": True, "order_book_top": 1},
            api_server={
                "enabled": True,
                "listen_ip_address": "127.0.0.1",
                "listen_port": port,
                "username": USER,
                "password": PASSWORD,
                "jwt_secret_key": JWT_SECRET,
            },
            webhook={"enabled": True, "url": hook.url},
        ) as bot:
            candidate = bot.candidate
            assert candidate is not None
            seeded = seed_journal(journal, fake, candidate.row)
            bot.start()
            check_the_running_bot(bot, api, hook, journal, seeded)
            check_a_restart(bot, api, hook)
    assert bot.secrets_found() == []
    for path in (bot.log_path, bot.console_path, journal):
        data = path.read_bytes()
        assert API_KEY.encode() not in data and PASSWORD.encode() not in data


def to_ms(bot: LiveBot, sample_row: int) -> int:
    """Open time (ms) of a sample row as the bot's shifted feed serves it."""
    frame = strategy_candidates()
    return int(frame["date"].iat[sample_row].timestamp() * 1000) + bot.emulator.app.candles.shift_ms


def check_the_running_bot(
    bot: LiveBot, api: Api, hook: Webhook, journal: Path, seeded: dict[int, float]
) -> None:
    candidate = bot.candidate
    assert candidate is not None
    bot.pin_price()  # the trade neither stops out nor takes profit while we wait
    trade = bot.wait_until(bot.open_trade, bot.after_signal(60), "the dry-run trade")

    # The daily summary (first loop): its numbers are the journal's at the time it arrived.
    received, summary = hook.wait_for("daily summary", 30)
    today = datetime.now(UTC).date().isoformat()
    assert summary.startswith(f"llm_oracle daily summary {today} UTC: ")
    stamp = datetime.fromtimestamp(received, UTC).isoformat()
    decisions, errors, calls, tokens, usd = journal_rows(
        journal,
        "SELECT SUM(error_kind IS NULL), SUM(error_kind IS NOT NULL), SUM(attempts), "
        "SUM(prompt_tokens + output_tokens + thinking_tokens), SUM(cost_usd) FROM decisions "
        f"WHERE created_at < '{stamp}'",
    )[0]
    assert decisions >= 2 and errors == 1  # at least the seeded ones
    assert tokens == decisions * TOKENS_PER_CALL  # the failed attempt used none
    assert summary_numbers(summary) == {
        "decisions": str(decisions),
        "calls": str(calls),
        "tokens": str(tokens),
        "USD": f"{usd:.4f}",
    }
    assert f"budget left: gemini calls {2000 - calls}, tokens {5_000_000 - tokens}, " in summary
    assert summary.endswith("errors: server_error 1")

    # A short message per decision: the candidate the bot asked about.
    _, entry = hook.wait_for(f"llm_oracle {PAIR}: {candidate.side} candidate -> ", 10)
    assert f"-> {candidate.side} (confidence 0.80, gemini) entry: fake: echo the" in entry

    # The next candle closes; the trade's first exit review lands on the chart too.
    bot.release_clock()
    candidate_ms = to_ms(bot, candidate.row)

    def reviewed() -> dict[int, dict[str, Any]] | None:
        candles = api.candles()
        later = [c for ms, c in candles.items() if ms > candidate_ms]
        done = any(c["oracle_review_confidence"] is not None for c in later)
        return candles if done else None

    candles = bot.wait_until(reviewed, 240, "an exit review on the FreqUI candles")
    newest = max(candles)
    assert candidate_ms < newest  # an earlier candle now
    at_candidate = candles[candidate_ms]
    assert at_candidate["oracle_confidence"] == pytest.approx(0.8)
    assert at_candidate["oracle_confirmed"] == pytest.approx(at_candidate["close"])
    assert at_candidate["oracle_candidate"] == pytest.approx(at_candidate["close"])
    assert at_candidate["oracle_veto"] is None
    # Candidates answered before the bot started, from the journal.
    for row, confidence in seeded.items():
        assert candles[to_ms(bot, row)]["oracle_confidence"] == pytest.approx(confidence)
    confident = [ms for ms, c in candles.items() if c["oracle_confidence"] is not None]
    assert len(confident) >= 3
    review = [c for c in candles.values() if c["oracle_review_confidence"] is not None]
    assert review[-1]["oracle_review_confidence"] == pytest.approx(0.8)  # fake: hold at 0.8
    assert review[-1]["oracle_review_exit"] is None
    _, message = hook.wait_for(f"llm_oracle {PAIR}: exit review -> ", 10)
    assert message.endswith("-> hold (confidence 0.80) keep: fake: echo the pre-filter")

    # The open trade's stop and target: flat lines from its entry candle on, on either side.
    entry_ms = candidate_ms + 180_000
    last = candles[newest]
    stop, target = last["oracle_trade_stop"], last["oracle_trade_target"]
    assert stop is not None and target is not None
    long_trade = not trade["is_short"]
    assert (
        (stop < trade["open_rate"] < target) if long_trade else (target < trade["open_rate"] < stop)
    )
    assert candles[entry_ms]["oracle_trade_stop"] == stop
    assert candles[candidate_ms]["oracle_trade_stop"] is None

    # The reasoning reaches the UI as trade custom data (FreqUI, /list_custom_data).
    custom = api.get(f"/trades/{trade['id']}/custom-data")
    by_key = {c["key"]: c for c in custom[0]["custom_data"]}
    assert by_key["oracle"]["value"]["reasoning"] == "fake: echo the pre-filter"
    review_data = by_key["oracle_review"]["value"]
    assert review_data["action"] == "hold" and review_data["exit"] is False


def check_a_restart(bot: LiveBot, api: Api, hook: Webhook) -> None:
    """Same day, same trades DB: the chart comes back from the journal, no second summary."""
    candidate = bot.candidate
    assert candidate is not None
    restarted = time.time()
    bot.restart()

    def loop_done() -> bool:
        health = api.try_get("/health")
        return bool(health and (health.get("last_process_ts") or 0) > int(restarted))

    bot.wait_until(loop_done, 90, "a full loop of the restarted bot")
    today = datetime.now(UTC).date().isoformat()
    assert f"daily summary at 00:00 UTC, last sent for {today}" in bot.log()
    assert len(hook.texts("daily summary")) == 1
    candles = api.candles()
    assert candles[to_ms(bot, candidate.row)]["oracle_confidence"] == pytest.approx(0.8)
