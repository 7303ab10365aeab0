"""The real `freqtrade trade --dry-run`, offline: Bybit emulator + fake Gemini on 127.0.0.1.

The emulator serves the real BTC sample shifted in time so that a known pre-filter candidate is
the newest closed candle while the bot runs. Then a candidate candle must lead to exactly one
Gemini call and a dry-run trade carrying the oracle's stop; with Gemini hanging, the bot must
keep looping and enter nothing.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bybit_emulator import CandleSource, start_emulator
from tests.factories import DATA_DIR
from tests.fake_gemini import FakeGemini, Hang, atr_stop, start_fake_gemini
from tests.freqtrade_run import freqtrade_argv, loopback_env, offline_overlay, prepare_run
from tests.live_bot import FeedClock, strategy_candidates

pytestmark = pytest.mark.integration

STEP_MS = 180_000
API_KEY = "e2e-secret-key-4242"


class WebhookReceiver:
    """Collects what Freqtrade's webhook sends, on 127.0.0.1; tests wait on a condition."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._cond:
                    receiver.messages.append(json.loads(body).get("status", ""))
                    receiver._cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, needle: str, timeout: float) -> str:
        with self._cond:
            found = self._cond.wait_for(
                lambda: next((m for m in self.messages if needle in m), None), timeout=timeout
            )
        assert found, f"no webhook message containing {needle!r}: {self.messages}"
        return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll an external condition (a file, a database) with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextmanager
def dry_run_bot(
    tmp_path: Path,
    fake: FakeGemini,
    hook: WebhookReceiver,
    *,
    timeout_s: float,
    held: bool = False,
) -> Iterator[tuple[subprocess.Popen[str], Path, Path, Path]]:
    """`held`: the feed's clock stops at the start, so the candidate is the newest closed candle
    at once and stays so (for tests that need the question asked, not a trade through the next
    candle); otherwise the feed follows the wall clock, which may mean waiting for a boundary."""
    frame = strategy_candidates()
    rows = frame.index[(frame["long_c"] | frame["short_c"]) & (frame.index > 2500)]
    candidate = int(rows[0])
    start_ms = int(frame["date"].iat[candidate].timestamp() * 1000)
    now_ms = int(time.time() * 1000)
    boundary = now_ms - now_ms % STEP_MS
    if not held and boundary + STEP_MS - now_ms < 90_000:
        boundary += STEP_MS  # too close to the next candle: let the candidate close at it
    # Candle `candidate` spans [boundary - 3m, boundary): the newest closed candle from then on.
    shift = boundary - STEP_MS - start_ms
    clock = FeedClock(now_ms) if held else time.time
    source = CandleSource(DATA_DIR, shift_ms=shift, clock=clock)
    with start_emulator(port=0, candles=source, log_path=tmp_path / "emulator.jsonl") as emu:
        journal = tmp_path / "journal.sqlite"
        db = tmp_path / "trades.sqlite"
        overlay = offline_overlay(
            emu.url,
            dry_run=True,
            db_url=f"sqlite:///{db}",
            internals={"process_throttle_secs": 1, "heartbeat_interval": 1},
            entry_pricing={"price_side": "other", "use_order_book": True, "order_book_top": 1},
            llm_oracle={
                "backend": "gemini",
                "journal_path": str(journal),
                "timeout_s": timeout_s,
                "fallback": "hold",
                "gemini": {"base_url": fake.url},
            },
        )
        overlay["exchange"]["pair_whitelist"] = ["BTC/USDT:USDT"]
        # No fiat conversion: it would ask api.coingecko.com, and tests stay on 127.0.0.1.
        overlay["fiat_display_currency"] = ""
        overlay["webhook"] = {
            "enabled": True,
            "url": hook.url,
            "format": "json",
            "allow_custom_messages": True,
            "strategy_msg": {"status": "{msg}"},
        }
        userdir, overlay_path = prepare_run(tmp_path, overlay)
        log = tmp_path / "freqtrade.log"
        log_handle = log.open("w")
        proc = subprocess.Popen(
            freqtrade_argv("trade", overlay_path, userdir, None, "--dry-run"),
            cwd=tmp_path,
            env=loopback_env(GEMINI_API_KEY=API_KEY),
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            yield proc, log, journal, db
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log_handle.close()
        assert emu.unexpected_requests() == []
        text = log.read_text() if log.exists() else ""
        assert API_KEY not in text
        if journal.exists():
            assert API_KEY.encode() not in journal.read_bytes()


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def test_candidate_candle_opens_a_dry_run_trade_with_the_oracle_stop(
    tmp_path: Path, hook: WebhookReceiver
) -> None:
    with (
        start_fake_gemini(API_KEY) as fake,
        dry_run_bot(tmp_path, fake, hook, timeout_s=10) as (proc, log, journal, db),
    ):
        assert fake.wait_for(requests=1, responded=1, timeout=240), log.read_text()[-3000:]
        trades = wait_until(
            lambda: _rows(db, "SELECT id, open_rate, stop_loss, is_short FROM trades"),
            90,
            "a dry-run trade",
        )
        trade_id, open_rate, stop_loss, is_short = trades[0]
        custom = wait_until(
            lambda: _rows(
                db,
                f"SELECT cd_value FROM trade_custom_data WHERE ft_trade_id = {trade_id} "
                "AND cd_key = 'oracle'",
            ),
            30,
            "the oracle decision on the trade",
        )
        stored = json.loads(custom[0][0])
        expected = atr_stop(fake.requests[0].user_text)
        assert stored["stop_loss"] == pytest.approx(expected)
        # config.json keeps the stop on the exchange: after the fill, a stop order is placed at
        # the stop the strategy computed (the trade row is committed with it).
        [(stop_price,)] = wait_until(
            lambda: _rows(
                db,
                f"SELECT stop_price FROM orders WHERE ft_trade_id = {trade_id} "
                "AND ft_order_side = 'stoploss'",
            ),
            30,
            "the stop order on the exchange",
        )
        [(stop_loss,)] = _rows(db, f"SELECT stop_loss FROM trades WHERE id = {trade_id}")
        assert stop_price == pytest.approx(stop_loss, abs=0.1)  # within one BTC tick
        # The stop in force is the tightest of the oracle's and the ATR stop, not the hard one.
        distance = abs(stop_loss - open_rate) / open_rate
        assert distance == pytest.approx(min(expected, stored["atr_stop"]), rel=0.02)
        assert distance < 0.05 / 3
        assert proc.poll() is None
        # The decision left the bot as a strategy message (Telegram / webhooks).
        side = "short" if is_short else "long"
        hook.wait_for(f"llm_oracle BTC/USDT:USDT: {side} candidate -> {side}", 30)
    rows = _rows(journal, "SELECT backend, error_kind, decision_json FROM decisions")
    assert rows and rows[0][0] == "gemini" and rows[0][1] is None
    assert json.loads(rows[0][2])["action"] == ("short" if is_short else "long")
    assert len({r.digest for r in fake.requests}) == len(fake.requests)  # never asked twice


def test_hanging_gemini_never_blocks_the_loop_and_never_enters(
    tmp_path: Path, hook: WebhookReceiver
) -> None:
    with start_fake_gemini(API_KEY) as fake:
        fake.default = Hang()
        with dry_run_bot(tmp_path, fake, hook, timeout_s=2) as (proc, log, journal, db):
            assert fake.wait_for(requests=1, timeout=240), log.read_text()[-3000:]
            asked_at = log.read_text().count("Bot heartbeat")

            def heartbeats_after() -> bool:
                return log.read_text().count("Bot heartbeat") >= asked_at + 5

            # Five more loops while Gemini still hangs: the deadline, not Gemini, sets the pace.
            wait_until(heartbeats_after, 60, "the bot to keep looping")
            assert proc.poll() is None
            assert _rows(db, "SELECT id FROM trades") == []
            timeouts = _rows(journal, "SELECT error_kind FROM decisions")
            assert ("timeout",) in timeouts
            assert not _rows(journal, "SELECT 1 FROM decisions WHERE error_kind IS NULL")
            # The fallback is explicit: announced with its reason.
            hook.wait_for("-> hold (confidence 0.00, fallback, timeout)", 30)
        assert fake.count == len({r.digest for r in fake.requests})
