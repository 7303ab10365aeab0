"""Exit reviews recorded by a dry-run replay in a backtest over the same period.

A dry-run (`freqtrade trade --dry-run`, the rules oracle, reviews every candle) holds a trade
across a real 3-minute candle boundary, so the oracle reviews it and the journal records the
review. A backtest of the same candles, replaying that journal with `on_miss: hold`, must then
build the very same review request: 0 entry misses and 0 exit-review misses.

This test waits for one real candle boundary (up to 3 minutes): the review schedule follows the
wall clock.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from bybit_emulator import Emulator
from tests.factories import DATA_DIR
from tests.freqtrade_run import offline_overlay, run_freqtrade
from tests.live_bot import STEP_MS, live_bot

pytestmark = pytest.mark.integration


def journal_rows(journal: Path, purpose: str) -> list[tuple[str, str | None]]:
    if not journal.exists():
        return []
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        sql = "SELECT key, error_kind FROM decisions WHERE purpose = ?"
        return conn.execute(sql, (purpose,)).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_a_backtest_over_a_dry_run_replays_its_exit_reviews(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite"
    oracle = {
        "backend": "rules",
        "journal_path": str(journal),
        "exit_review": {"enabled": True, "min_candles": 1, "every_candles": 1},
    }
    (tmp_path / "dry").mkdir()
    with live_bot(
        tmp_path / "dry",
        dry_run=True,
        llm_oracle=oracle,
        entry_pricing={"price_side": "other", "use_order_book": True, "order_book_top": 1},
    ) as bot:
        bot.pin_price()  # the trade neither stops out nor takes profit while we wait
        trade = bot.wait_until(bot.open_trade, bot.after_signal(60), "the dry-run trade")
        bot.release_clock()  # the next candle closes at its real time (at most 3 minutes)
        bot.wait_until(lambda: journal_rows(journal, "exit_review"), 240, "an exit review")
        reviews = journal_rows(journal, "exit_review")
        bot.stop()
    assert reviews and all(error is None for _, error in reviews)
    assert bot.secrets_found() == []
    candidate = bot.candidate
    assert candidate is not None and bot.clock is not None

    # The same candles, at the times the dry-run saw them.
    source = bot.emulator.app.candles
    shift_ms = source.shift_ms
    datadir = tmp_path / "bt" / "data"
    (datadir / "futures").mkdir(parents=True)
    frame = pd.read_feather(DATA_DIR / "BTC_USDT_USDT-3m-futures.feather")
    frame["date"] = frame["date"] + pd.Timedelta(milliseconds=shift_ms)
    frame.to_feather(datadir / "futures" / "BTC_USDT_USDT-3m-futures.feather")
    signal = (candidate.start_ms + shift_ms) // 1000
    opened = datetime.fromisoformat(trade["open_date"]).replace(tzinfo=UTC)
    assert opened.timestamp() * 1000 // STEP_MS * STEP_MS == candidate.start_ms + shift_ms + STEP_MS
    # The backtest covers the dry-run's period: up to the loop that made its last review
    # (reviews on candles 1..n of the trade, asked one candle later).
    entry_candle = signal + STEP_MS // 1000
    start, end = signal - 3600, entry_candle + len(reviews) * STEP_MS // 1000 + 60

    overlay = offline_overlay(
        emulator.url,
        llm_oracle={
            **oracle,
            "backend": "replay",
            "replay": {"source": "rules", "on_miss": "hold"},
        },
    )
    overlay["exchange"]["pair_whitelist"] = ["BTC/USDT:USDT"]
    run = run_freqtrade(
        "backtesting",
        ["--cache", "none", "--export", "trades", "--timerange", f"{start}-{end}"],
        workdir=tmp_path / "bt",
        overlay=overlay,
        datadir=datadir,
    )
    assert run.returncode == 0, run.output[-3000:]
    summary = run.oracle_summary()
    found = re.search(r"(\d+) candidates \+ (\d+) exit reviews, (\d+) journal hits", summary)
    assert found, summary
    candidates, asked_reviews, hits = (int(v) for v in found.groups())
    assert asked_reviews >= 1 and hits == candidates + asked_reviews, summary
    assert "misses by purpose: entries 0, exit reviews 0" in summary, summary
    bt_trades = run.result()["trades"]
    assert any(
        datetime.fromisoformat(t["open_date"]).timestamp() * 1000
        == candidate.start_ms + shift_ms + STEP_MS
        for t in bt_trades
    ), bt_trades
