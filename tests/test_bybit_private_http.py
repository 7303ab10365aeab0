"""The emulator as a server: signed raw HTTP, load, timeouts, bad input, bounded log, CLI flags.

Everything stays on 127.0.0.1 and is bounded in count and time.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bybit_emulator import AccountConfig, Emulator, signed_headers, start_emulator
from tests.live_bot import wait_until
from tests.test_bybit_emulator import LOOPBACK_ENV, REPO, free_port

ACCOUNT = AccountConfig("http-test-key-42", "http-test-secret-42", Decimal("5000"), name="http")


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    with start_emulator(
        accounts=[ACCOUNT],
        test_control=True,
        idle_timeout_s=0.5,
        log_path=tmp_path / "emulator.jsonl",
    ) as emulator:
        emulator.set_price("BTCUSDT", "100000")
        yield emulator
    assert emulator.internal_errors() == []


def call(
    port: int,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    account: AccountConfig | None = ACCOUNT,
    timestamp_ms: int | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> dict[str, Any]:
    """One request, signed like ccxt signs it (raw query string or raw body)."""
    headers = {"Content-Type": "application/json"}
    if account is not None:
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        payload = query if method == "GET" else body.decode("utf-8", "replace")
        headers.update(signed_headers(account, payload, timestamp_ms=ts))
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            method, path + (f"?{query}" if query else ""), body=body or None, headers=headers
        )
        response = conn.getresponse()
        data = json.loads(response.read())
        data["_status"] = response.status
        return data
    finally:
        if own:
            conn.close()


def test_signed_raw_requests(emu: Emulator) -> None:
    balance = call(emu.port, "GET", "/v5/account/wallet-balance", query="accountType=UNIFIED")
    assert balance["retCode"] == 0
    assert balance["result"]["list"][0]["coin"][0]["walletBalance"] == "5000"
    body = json.dumps(
        {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market",
         "qty": "0.01"}
    ).encode()  # fmt: skip
    created = call(emu.port, "POST", "/v5/order/create", body=body)
    assert created["retCode"] == 0 and created["result"]["orderId"]
    # The signature covers the exact bytes: the same body, re-serialised, no longer matches.
    tampered = call(
        emu.port, "POST", "/v5/order/create", body=body.replace(b'"qty": "0.01"', b'"qty":"0.01"')
    )
    headers = signed_headers(ACCOUNT, body.decode(), timestamp_ms=int(time.time() * 1000))
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    conn.request("POST", "/v5/order/create", body=body.replace(b"0.01", b"0.02"), headers=headers)
    forged = json.loads(conn.getresponse().read())
    conn.close()
    assert tampered["retCode"] == 0  # signed over what was sent
    assert forged["retCode"] == 10004
    missing = call(emu.port, "GET", "/v5/account/info", account=None)
    assert (missing["retCode"], missing["retMsg"]) == (10003, "API key is invalid.")
    old = call(emu.port, "GET", "/v5/account/info", timestamp_ms=int(time.time() * 1000) - 60_000)
    assert old["retCode"] == 10002
    assert "recv_window" in old["retMsg"]


def test_malformed_json_body_is_an_error_answer_not_a_crash(emu: Emulator) -> None:
    for body in (b'{"category": "linear", "symbol": ', b"[1, 2, 3]", b"\xff\xfe"):
        answer = call(emu.port, "POST", "/v5/order/create", body=body)
        assert answer["_status"] == 200 and answer["retCode"] == 10001, body
    assert call(emu.port, "GET", "/v5/account/info")["retCode"] == 0  # still serving
    logged = [r["body"] for r in emu.requests if r["path"] == "/v5/order/create"]
    assert logged[0] == '{"category": "linear", "symbol": '  # kept as text when not JSON


def raw_exchange(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes the connection (or `wait` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
        raise AssertionError(f"connection still open after {wait}s: {b''.join(chunks)[:200]!r}")


@pytest.mark.parametrize(
    "length", ["abc", "-5", str(10**9)], ids=["not-a-number", "negative", "too-large"]
)
def test_bad_content_length_answers_400_and_closes(emu: Emulator, length: str) -> None:
    reply = raw_exchange(
        emu.port,
        b"POST /v5/order/create HTTP/1.1\r\nHost: x\r\n"
        + f"Content-Length: {length}\r\n\r\n{{}}".encode(),
    )
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["retCode"] == 10001
    assert emu.requests[-1]["http_status"] == 400


def test_idle_and_half_requests_are_closed_after_the_timeout(emu: Emulator) -> None:
    started = time.monotonic()
    assert raw_exchange(emu.port, b"") == b""  # connects, sends nothing
    assert raw_exchange(emu.port, b"GET /v5/market/time HTTP/1.1\r\nHost: x\r\n") == b""
    body = b"POST /v5/order/create HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    assert raw_exchange(emu.port, body) == b""  # half a body
    assert time.monotonic() - started < 4  # three 0.5 s timeouts, not forever
    # A keep-alive connection serves several requests, then idles out.
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    for _ in range(3):
        assert call(emu.port, "GET", "/v5/market/time", account=None, conn=conn)["retCode"] == 0
    conn.sock.settimeout(3)
    assert conn.sock.recv(1) == b""  # closed by the server after 0.5 s idle
    conn.close()


def test_load_200_requests_from_20_threads(emu: Emulator) -> None:
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def worker(n: int) -> None:
        try:
            barrier.wait(timeout=10)
            conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
            for i in range(10):
                if (n + i) % 2:
                    answer = call(emu.port, "GET", "/v5/position/list",
                                  query="category=linear&settleCoin=USDT", conn=conn)  # fmt: skip
                else:
                    answer = call(emu.port, "GET", "/v5/market/tickers",
                                  query="category=linear", account=None)  # fmt: skip
                with lock:
                    results.append(answer["retCode"])
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    elapsed = time.monotonic() - started
    assert errors == [] and results == [0] * 200
    assert elapsed < 10, f"200 requests took {elapsed:.1f}s"
    print(f"\n200 requests from 20 threads in {elapsed:.2f}s ({200 / elapsed:.0f}/s)")


def test_connections_beyond_the_limit_are_closed_not_queued(tmp_path: Path) -> None:
    with start_emulator(max_connections=2, idle_timeout_s=5) as emu:
        held = [http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5) for _ in range(2)]
        try:
            for conn in held:  # one answered request each: both slots are taken, kept alive
                assert (
                    call(emu.port, "GET", "/v5/market/time", account=None, conn=conn)["retCode"]
                    == 0
                )
            assert raw_exchange(emu.port, b"GET /v5/market/time HTTP/1.1\r\n\r\n", 3) == b""
        finally:
            for conn in held:
                conn.close()

        def answers() -> bool:
            try:
                return call(emu.port, "GET", "/v5/market/time", account=None)["retCode"] == 0
            except (ConnectionError, http.client.HTTPException, json.JSONDecodeError):
                return False

        wait_until(answers, 5, "a free slot once the held connections close")


def test_in_memory_log_is_bounded_and_the_file_keeps_everything(tmp_path: Path) -> None:
    log = tmp_path / "all.jsonl"
    with start_emulator(max_records=50, log_path=log) as emu:
        conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
        for _ in range(120):
            call(emu.port, "GET", "/v5/market/time", account=None, conn=conn)
        call(emu.port, "GET", "/nowhere", account=None, conn=conn)
        conn.close()
        assert len(emu.requests) == 50 and emu.total_requests == 121
        assert [r["path"] for r in emu.unexpected_requests()] == ["/nowhere"]
    assert len(log.read_text().splitlines()) == 121


# ---- python -m bybit_emulator with accounts ---------------------------------------------------

CHILD = """
import json, os, sys, time, urllib.request
from decimal import Decimal
from bybit_emulator import AccountConfig, signed_headers
url = os.environ["BYBIT_EMULATOR_URL"]
account = AccountConfig(os.environ["K"], os.environ["S"])
query = "accountType=UNIFIED"
headers = signed_headers(account, query, timestamp_ms=int(time.time() * 1000))
request = urllib.request.Request(f"{url}/v5/account/wallet-balance?{query}", headers=headers)
answer = json.load(urllib.request.urlopen(request, timeout=10))
print(answer["result"]["list"][0]["coin"][0]["walletBalance"])
control = urllib.request.Request(f"{url}/_control/state")
print(json.load(urllib.request.urlopen(control, timeout=10))["retCode"])
"""


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bybit_emulator", *args],
        cwd=REPO,
        env={**os.environ, **LOOPBACK_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_account_and_test_control_flags() -> None:
    secret_env = {"K": "cli-key-0001", "S": "cli-secret-0001"}
    on = run_cli(
        "--port", str(free_port()), "--account", "cli-key-0001:cli-secret-0001:750",
        "--test-control", "--", sys.executable, "-c", CHILD, env=secret_env,
    )  # fmt: skip
    assert on.returncode == 0, on.stderr
    assert on.stdout.split() == ["750", "0"]
    assert "1 account(s), test control ON" in on.stderr
    off = run_cli(
        "--port", str(free_port()), "--account-env", "ACCT", "--", sys.executable, "-c", CHILD,
        env={**secret_env, "ACCT": "cli-key-0001:cli-secret-0001"},
    )  # fmt: skip
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["10000", "10404"]  # control off: an unknown path
    for run in (on, off):
        assert "cli-secret-0001" not in run.stderr


def test_cli_rejects_a_bad_account_without_echoing_it() -> None:
    bad = run_cli("--port", str(free_port()), "--account", "only-a-key-and-s3cret-no-colon")
    assert bad.returncode == 2
    assert "s3cret" not in bad.stderr and "KEY:SECRET[:BALANCE]" in bad.stderr
    missing = run_cli("--port", str(free_port()), "--account-env", "NOT_SET_ANYWHERE")
    assert missing.returncode == 2 and "NOT_SET_ANYWHERE is not set" in missing.stderr
