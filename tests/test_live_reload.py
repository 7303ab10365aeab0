"""`/reload_config` twenty times on a live bot: the oracle leaks no thread and no file.

Freqtrade builds a new strategy on every reload and calls `ft_bot_cleanup` on the old one; the
strategy closes its oracle there (loop thread, HTTP client, SQLite journal). Before that hook was
used, every reload leaked one of each.

Freqtrade 2026.9 itself leaks on every reload, with or without this strategy (measured with the
oracle disabled): about 3 sockets, 2 pipes, 2 epoll and 1 eventfd (a new exchange event loop),
a trades-DB handle every other reload, and with the REST API on, one io_uring poller thread
("iou-sqp-*", libuv in uvicorn's loop). The test counts what is ours: the threads other than
those pollers, the journal's file handles, and the Gemini client's connections (the backend is
Gemini, against the fake REST endpoint, which keeps idle connections open as Google's does: a
client that is not closed keeps its socket).
"""

from __future__ import annotations

import base64
import os
import re
import socket
import urllib.request
from pathlib import Path

import pytest

from tests.fake_gemini import start_fake_gemini
from tests.live_bot import live_bot

pytestmark = pytest.mark.integration

USER, PASSWORD = "tester", "a-long-test-password-1234"
RELOADS = 20
API_KEY = "AIzaFAKE-reload-key-0123456789"


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


def fd_targets(pid: int) -> list[str]:
    """What each open file descriptor of the process points at (a path, `socket:[inode]`, ...)."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile
            continue
    return targets


def counts(pid: int, journal: Path) -> tuple[int, int]:
    """Threads (without libuv's io_uring pollers) and open handles on the journal's files."""
    names = [
        Path(f"/proc/{pid}/task/{t}/comm").read_text() for t in os.listdir(f"/proc/{pid}/task")
    ]
    threads = sum(1 for name in names if not name.startswith("iou-"))
    handles = sum(1 for target in fd_targets(pid) if target.startswith(str(journal)))
    return threads, handles


def connections_to(pid: int, port: int) -> int:
    """The process's established TCP connections to 127.0.0.1:`port`."""
    inodes = {t[len("socket:[") : -1] for t in fd_targets(pid) if t.startswith("socket:[")}
    found = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        found += remote == f"0100007F:{port:04X}" and state == "01" and inode in inodes
    return found


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
    journal = tmp_path / "journal.sqlite"
    with start_fake_gemini(API_KEY) as fake:
        oracle = {
            "backend": "gemini",
            "journal_path": str(journal),
            "gemini": {"base_url": fake.url},
        }
        gemini_port = int(fake.url.rsplit(":", 1)[1])
        with live_bot(
            tmp_path, api_server=api, llm_oracle=oracle, env={"GEMINI_API_KEY": API_KEY}
        ) as bot:
            marker = "risk ledger rebuilt from"
            bot.wait_until(lambda: bot.log().count(marker) == 1, 60, "the bot to start")
            assert bot.proc is not None
            # The candidate is asked once; the client keeps its connection open afterwards.
            assert fake.wait_for(responded=1, timeout=bot.after_signal(90)), bot.log()[-3000:]
            bot.wait_until(lambda: connections_to(bot.proc.pid, gemini_port), 10, "a connection")
            asked = fake.count
            seen: list[tuple[int, int]] = []
            sockets: list[int] = []
            for n in range(1, RELOADS + 1):
                assert post(f"http://127.0.0.1:{port}/api/v1/reload_config") == 200
                bot.wait_until(lambda n=n: bot.log().count(marker) == n + 1, 60, f"reload {n}")
                seen.append(counts(bot.proc.pid, journal))
                sockets.append(connections_to(bot.proc.pid, gemini_port))
            # Every new oracle answers the candidate from the journal: nothing new is sent, so
            # the one connection there was belonged to the first oracle, closed at reload 1.
            assert fake.count == asked
            assert sockets == [0] * RELOADS, sockets
            threads, handles = zip(*seen, strict=True)
            # A leak grows by one per reload (20 in all); flat means the last equals the first
            # within the one or two short-lived threads Freqtrade may have running at a sample.
            assert max(threads) - min(threads) <= 2 and threads[-1] <= threads[0] + 1, threads
            assert max(handles) == min(handles), handles  # the journal, its -wal and -shm
            # Each old oracle was closed (its summary is logged by ft_bot_cleanup).
            assert len(re.findall(r" - oracle: \d+ candidates", bot.log())) >= RELOADS
    assert bot.secrets_found() == []
