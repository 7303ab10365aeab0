"""Tests for the offline Bybit emulator: ccxt against it, the real Freqtrade CLI, and its CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd
import pytest

from bybit_emulator import SYMBOLS, CandleSource, Emulator, start_emulator
from bybit_emulator.risk_limits import DEFAULT_TIERS_PATH

REPO = Path(__file__).resolve().parents[1]
# The sample ships with the repository: a missing file is a failure, never a skip.
DATA_DIR = REPO / "user_data" / "data" / "bybit" / "futures"
PAIRS = sorted(f"{s.removesuffix('USDT')}/USDT:USDT" for s in SYMBOLS)
LOOPBACK_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def overlay(url: str) -> dict[str, Any]:
    """The Freqtrade exchange overlay that points ccxt at the emulator (the project's shape)."""
    ccxt_config = {
        "urls": {"api": {k: url for k in ("public", "private", "spot", "futures", "v2")}},
        "options": {"fetchMarkets": {"types": ["linear"]}},
    }
    return {
        "exchange": {
            "name": "bybit",
            "enable_ws": False,
            "ccxt_config": ccxt_config,
            "ccxt_async_config": ccxt_config,
        }
    }


def make_client(url: str) -> ccxt.bybit:
    config = overlay(url)["exchange"]["ccxt_config"]
    # ccxt's own throttle only slows a loopback test down.
    return ccxt.bybit({**config, "enableRateLimit": False})


def get_json(url: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return json.loads(response.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiers_file() -> dict[str, list[dict[str, Any]]]:
    return json.loads(DEFAULT_TIERS_PATH.read_text())["data"]


def strip_cursor(tier: dict[str, Any]) -> dict[str, Any]:
    # When paging, ccxt writes the cursor into the raw rows it got: `nextPageCursor` into the first
    # row of a page and `info: {"nextPageCursor": ...}` into the last one.
    info = {k: v for k, v in tier["info"].items() if k not in ("info", "nextPageCursor")}
    return {**tier, "info": info}


TIER_KEYS = ("tier", "minNotional", "maxNotional", "maintenanceMarginRate", "maxLeverage", "info")


@pytest.fixture(scope="module")
def data_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log = tmp_path_factory.mktemp("emulator") / "requests.jsonl"
    with start_emulator(data_dir=DATA_DIR, log_path=log) as emu:
        yield emu


@pytest.fixture(scope="module")
def client(data_emulator: Emulator) -> ccxt.bybit:
    exchange = make_client(data_emulator.url)
    exchange.load_markets()
    return exchange


# ---- ccxt ---------------------------------------------------------------------------------------


def test_load_markets_returns_the_nine_pinned_swaps(client: ccxt.bybit) -> None:
    assert sorted(client.markets) == PAIRS
    assert all(m["swap"] and m["linear"] and m["active"] for m in client.markets.values())
    btc = client.markets["BTC/USDT:USDT"]
    assert btc["precision"] == {"price": 0.1, "amount": 0.001}
    assert btc["limits"]["amount"]["min"] == 0.001
    assert btc["limits"]["cost"]["min"] == 5
    assert btc["limits"]["leverage"]["max"] == 100
    assert client.markets["DOGE/USDT:USDT"]["precision"] == {"price": 0.00001, "amount": 1}


def test_market_max_leverage_matches_tier_one(client: ccxt.bybit) -> None:
    for pair, tiers in tiers_file().items():
        assert client.markets[pair]["limits"]["leverage"]["max"] == tiers[0]["maxLeverage"], pair


def test_leverage_tiers_equal_the_pinned_file(client: ccxt.bybit) -> None:
    fetched = client.fetch_leverage_tiers()
    expected = tiers_file()
    assert sorted(fetched) == PAIRS
    btc = [{k: t[k] for k in TIER_KEYS} for t in fetched["BTC/USDT:USDT"]]
    assert btc == [{k: t[k] for k in TIER_KEYS} for t in expected["BTC/USDT:USDT"]]


def test_risk_limit_paging_by_symbol_reaches_every_tier() -> None:
    with start_emulator(risk_limit_symbols_per_page=4) as emu:
        fetched = make_client(emu.url).fetch_leverage_tiers()
        pages = [r for r in emu.requests if r["path"] == "/v5/market/risk-limit"]
    assert [r["query"].get("cursor") for r in pages] == [None, "4", "8"]
    for pair, tiers in tiers_file().items():
        got = [{k: strip_cursor(t)[k] for k in TIER_KEYS} for t in fetched[pair]]
        assert got == [{k: t[k] for k in TIER_KEYS} for t in tiers], pair


def test_fetch_time(client: ccxt.bybit) -> None:
    assert abs(client.fetch_time() - client.milliseconds()) < 5_000


def test_fetch_ohlcv_serves_the_file_candles(client: ccxt.bybit) -> None:
    assert DATA_DIR is not None
    frame = pd.read_feather(DATA_DIR / "BTC_USDT_USDT-3m-futures.feather")
    since = int(frame["date"].iloc[100].timestamp() * 1000)
    candles = client.fetch_ohlcv("BTC/USDT:USDT", "3m", since=since, limit=50)
    rows = frame.iloc[100:150]
    assert [c[0] for c in candles] == [int(d.timestamp() * 1000) for d in rows["date"]]
    assert [c[1:5] for c in candles] == rows[["open", "high", "low", "close"]].values.tolist()
    assert [c[5] for c in candles] == pytest.approx(rows["volume"].tolist())


def test_hourly_and_mark_klines(client: ccxt.bybit) -> None:
    assert DATA_DIR is not None
    frame = pd.read_feather(DATA_DIR / "BTC_USDT_USDT-3m-futures.feather").set_index("date")
    hourly = frame.resample("1h").agg({"open": "first", "high": "max", "low": "min"})
    newest = client.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=3)
    assert len(newest) == 3
    for ts, o, h, lo, *_ in newest:
        row = hourly.loc[pd.Timestamp(ts, unit="ms", tz="UTC")]
        assert (o, h, lo) == (row["open"], row["high"], row["low"])
    mark = pd.read_feather(DATA_DIR / "BTC_USDT_USDT-1h-mark.feather")
    served = client.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=2, params={"price": "mark"})
    assert [c[4] for c in served] == mark["close"].iloc[-2:].tolist()
    # 5m candles are built from the 1m file (3m does not divide 5m).
    minute = pd.read_feather(DATA_DIR / "BTC_USDT_USDT-1m-futures.feather").set_index("date")
    five = minute.resample("5min").agg({"open": "first", "high": "max", "low": "min"})
    served = client.fetch_ohlcv("BTC/USDT:USDT", "5m", limit=3)
    assert len(served) == 3
    for ts, o, h, lo, *_ in served:
        row = five.loc[pd.Timestamp(ts, unit="ms", tz="UTC")]
        assert (o, h, lo) == (row["open"], row["high"], row["low"])


def test_an_interval_the_files_cannot_build_is_a_bad_request(tmp_path: Path) -> None:
    (tmp_path / "BTC_USDT_USDT-3m-futures.feather").write_bytes(
        (DATA_DIR / "BTC_USDT_USDT-3m-futures.feather").read_bytes()
    )
    with start_emulator(port=0, data_dir=tmp_path) as emu:
        client = make_client(emu.url)
        assert len(client.fetch_ohlcv("BTC/USDT:USDT", "15m", limit=2)) == 2
        with pytest.raises(ccxt.BadRequest):
            client.fetch_ohlcv("BTC/USDT:USDT", "5m")  # 5m cannot be built from 3m candles


def test_tickers_order_book_and_funding_parse(client: ccxt.bybit) -> None:
    tickers = client.fetch_tickers()
    assert "BTC/USDT:USDT" in tickers and "WIF/USDT:USDT" not in tickers  # WIF has no candles
    btc = tickers["BTC/USDT:USDT"]
    assert btc["bid"] < btc["ask"] and btc["last"] == btc["bid"]
    book = client.fetch_order_book("ETH/USDT:USDT", limit=20)
    assert len(book["bids"]) == len(book["asks"]) == 20
    assert book["bids"][0][0] < book["asks"][0][0]
    rates = client.fetch_funding_rate_history("BTC/USDT:USDT", since=1_750_000_000_000, limit=3)
    assert [r["timestamp"] % (8 * 3_600_000) for r in rates] == [0, 0, 0]


def test_unknown_path_is_answered_and_recorded(data_emulator: Emulator) -> None:
    emulator = data_emulator  # this module's own instance: it is meant to see a stray request
    answer = get_json(f"{emulator.url}/v5/account/wallet-balance?accountType=UNIFIED")
    assert answer["retCode"] == 10404
    record = emulator.unexpected_requests()[-1]
    assert record["path"] == "/v5/account/wallet-balance"
    assert record["query"] == {"accountType": "UNIFIED"}
    assert not record["expected"]
    assert all(r["expected"] for r in emulator.requests if r["path"].startswith("/v5/market/"))


def test_requests_are_logged_as_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    with start_emulator(log_path=log) as emu:
        get_json(f"{emu.url}/v5/market/time")
        get_json(f"{emu.url}/nowhere")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["path"], r["expected"]) for r in lines] == [
        ("/v5/market/time", True),
        ("/nowhere", False),
    ]


def test_instruments_paging_status_and_categories(data_emulator: Emulator) -> None:
    base = f"{data_emulator.url}/v5/market/instruments-info?category="
    seen: list[str] = []
    cursor = ""
    while True:
        result = get_json(f"{base}linear&limit=4&cursor={cursor}")["result"]
        seen += [row["symbol"] for row in result["list"]]
        cursor = result["nextPageCursor"]
        if not cursor:
            break
    assert seen == list(SYMBOLS)
    assert get_json(f"{base}linear&status=PreLaunch")["result"]["list"] == []
    only = get_json(f"{base}linear&symbol=SOLUSDT")["result"]["list"]
    assert [row["symbol"] for row in only] == ["SOLUSDT"]
    for category in ("spot", "inverse", "option"):
        assert get_json(f"{base}{category}")["result"]["list"] == []


def test_wall_clock_candles_follow_the_clock() -> None:
    assert DATA_DIR is not None
    now = [1_900_000_000.0]  # seconds, far beyond the sample
    source = CandleSource.wall_clock(DATA_DIR, clock=lambda: now[0])
    assert source.shift_ms % 86_400_000 == 0
    first = source.klines("BTC", "3", limit=2)
    assert first[0].start_ms <= now[0] * 1000 < first[0].start_ms + 180_000
    now[0] += 1800
    later = source.klines("BTC", "3", limit=1)[0]
    assert later.start_ms - first[0].start_ms == 1_800_000
    hour = source.klines("BTC", "60", limit=1)[0]  # still forming: built from the 3m so far
    assert hour.close == later.close


# ---- the real Freqtrade CLI ---------------------------------------------------------------------


@pytest.mark.integration
def test_freqtrade_list_pairs_sees_the_nine_pairs(tmp_path: Path) -> None:
    userdir = tmp_path / "user_data"
    userdir.mkdir()
    with start_emulator() as emu:
        config = {
            "trading_mode": "futures",
            "margin_mode": "isolated",
            "stake_currency": "USDT",
            "stake_amount": 100,
            "dry_run": True,
            "max_open_trades": 3,
            "timeframe": "3m",
            "entry_pricing": {"price_side": "same"},
            "exit_pricing": {"price_side": "same"},
            "pairlists": [{"method": "StaticPairList"}],
        }
        config["exchange"] = {**overlay(emu.url)["exchange"], "pair_whitelist": PAIRS}
        (tmp_path / "config.json").write_text(json.dumps(config))
        freqtrade = Path(sys.executable).with_name("freqtrade")
        proc = subprocess.run(
            [str(freqtrade), "list-pairs", "--print-json", "--config", "config.json"]
            + ["--trading-mode", "futures", "--userdir", str(userdir)]
            + ["--datadir", str(tmp_path / "data")],
            cwd=tmp_path,
            env={**os.environ, **LOOPBACK_ENV},
            capture_output=True,
            text=True,
            timeout=120,
        )
        requests = emu.requests
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == PAIRS
    assert [r for r in requests if not r["expected"] or r["ret_code"] != 0] == []
    assert {r["path"] for r in requests} >= {
        "/v5/market/instruments-info",
        "/v5/market/risk-limit",
    }


# ---- python -m bybit_emulator -------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bybit_emulator", *args],
        cwd=REPO,
        env={**os.environ, **LOOPBACK_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_wraps_a_command_and_returns_its_exit_code(tmp_path: Path) -> None:
    port = free_port()
    fetch = (
        "import json, os, urllib.request;"
        "u = os.environ['BYBIT_EMULATOR_URL'] + '/v5/market/time';"
        "r = json.load(urllib.request.urlopen(u, timeout=10));"
        "raise SystemExit(r['retCode'])"
    )
    log = tmp_path / "log.jsonl"
    ok = run_cli("--port", str(port), "--log", str(log), "--", sys.executable, "-c", fetch)
    assert ok.returncode == 0, ok.stderr
    assert f"bybit emulator on http://127.0.0.1:{port}" in ok.stderr
    assert json.loads(log.read_text().splitlines()[0])["path"] == "/v5/market/time"

    failing = run_cli("--port", str(free_port()), "--", sys.executable, "-c", "raise SystemExit(3)")
    assert failing.returncode == 3


def test_cli_port_taken_exits_2() -> None:
    with start_emulator() as emu:
        taken = run_cli("--port", str(emu.port), "--", sys.executable, "-c", "pass")
    assert taken.returncode == 2
    assert taken.stderr.strip() == f"bybit emulator: port {emu.port} on 127.0.0.1 is already in use"
