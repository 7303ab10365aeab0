"""`/reload_config` twenty times on a live bot: the oracle leaks no thread and no file.

Freqtrade builds a new strategy on every reload and calls `ft_bot_cleanup` on the old one; the
strategy closes its oracle there (loop thread, HTTP client, SQLite journal). Before that hook was
used, every reload leaked one of each.

Freqtrade 2026.9 itself leaks on every reload, with or without this strategy (measured with the
oracle disabled): about 3 sockets, 2 pipes, 2 epoll and 1 eventfd (a new exchange event loop),
a trades-DB handle every other reload, and with the REST API on, one io_uring poller thread
("iou-sqp-*", libuv in uvicorn's loop). The test counts what is ours: the threads other than
those pollers, and the journal's file handles.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import urllib.request
from pathlib import Path

import pytest

from tests.live_bot import live_bot

pytestmark = pytest.mark.integration

USER, PASSWORD = "tester", "a-long-test-password-1234"
RELOADS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str) -> int:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        url, method="POST", headers={"Authorization": f"Basic {token}"}, data=b""
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def counts(pid: int, journal: Path) -> tuple[int, int]:
    """Threads (without libuv's io_uring pollers) and open handles on the journal's files."""
    names = [
        Path(f"/proc/{pid}/task/{t}/comm").read_text() for t in os.listdir(f"/proc/{pid}/task")
    ]
    threads = sum(1 for name in names if not name.startswith("iou-"))
    handles = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        handles += target.startswith(str(journal))
    return threads, handles


def test_twenty_reloads_leak_no_thread_and_no_file(tmp_path: Path) -> None:
    port = free_port()
    api = {
        "enabled": True,
        "listen_ip_address": "127.0.0.1",
        "listen_port": port,
        "username": USER,
        "password": PASSWORD,
        "jwt_secret_key": "x" * 40,
        "ws_token": "test-ws-token-1234567890",
    }
    with live_bot(tmp_path, api_server=api) as bot:
        marker = "risk ledger rebuilt from"
        bot.wait_until(lambda: bot.log().count(marker) == 1, 60, "the bot to start")
        assert bot.proc is not None
        seen: list[tuple[int, int]] = []
        for n in range(1, RELOADS + 1):
            assert post(f"http://127.0.0.1:{port}/api/v1/reload_config") == 200
            bot.wait_until(lambda n=n: bot.log().count(marker) == n + 1, 60, f"reload {n}")
            seen.append(counts(bot.proc.pid, tmp_path / "journal.sqlite"))
        threads, handles = zip(*seen, strict=True)
        # A leak grows by one per reload (20 in all); flat means the last equals the first
        # within the one or two short-lived threads Freqtrade may have running at a sample.
        assert max(threads) - min(threads) <= 2 and threads[-1] <= threads[0] + 1, threads
        assert max(handles) == min(handles), handles  # the journal, its -wal and -shm
        # Each old oracle was closed (its summary is logged by ft_bot_cleanup).
        assert len(re.findall(r" - oracle: \d+ candidates", bot.log())) >= RELOADS
    assert bot.secrets_found() == []
