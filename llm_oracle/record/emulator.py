"""The offline Bybit emulator that `user_data/config.offline.json` points ccxt at.

When the merged config sends every ccxt URL to one port on 127.0.0.1 (the offline overlay),
`record` needs an emulator there: one that already answers is reused, otherwise one is started
in this process for the length of the run (it dies with `record`, whatever ends it).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def offline_port(config: dict[str, Any]) -> int | None:
    """The loopback port all of ccxt's API URLs point at, or None (a real exchange)."""
    exchange = config.get("exchange") or {}
    urls: list[str] = []
    for section in ("ccxt_config", "ccxt_async_config"):
        api = ((exchange.get(section) or {}).get("urls") or {}).get("api")
        if isinstance(api, dict):
            urls += [str(v) for v in api.values()]
        elif isinstance(api, str):
            urls.append(api)
    if not urls:
        return None
    parts = [urlsplit(u) for u in urls]
    ports = {p.port for p in parts}
    if any(p.hostname not in _LOOPBACK for p in parts) or len(ports) != 1 or None in ports:
        return None
    return ports.pop()


def answers_like_bybit(port: int, timeout: float = 2.0) -> bool | None:
    """True: a Bybit emulator answers; False: something else listens; None: nothing does."""
    url = f"http://127.0.0.1:{port}/v5/market/time"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            body = json.loads(response.read())
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None
        return False
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("retCode") == 0


@contextmanager
def offline_emulator(port: int) -> Iterator[str]:
    """An emulator on 127.0.0.1:port for the block: reused if one answers, else started here.

    Yields a line saying which. Raises SystemExit when something else holds the port."""
    found = answers_like_bybit(port)
    if found:
        yield f"using the Bybit emulator already running on 127.0.0.1:{port}"
        return
    if found is False:
        raise SystemExit(
            f"llm-oracle record: 127.0.0.1:{port} (the offline overlay's exchange) is taken by "
            "something that is not the Bybit emulator; stop it or change the overlay's port"
        )
    from bybit_emulator import start_emulator  # only offline recordings need it

    try:
        emulator = start_emulator(port)
    except OSError as exc:
        if answers_like_bybit(port):  # another recorder started one in the meantime
            yield f"using the Bybit emulator already running on 127.0.0.1:{port}"
            return
        raise SystemExit(f"llm-oracle record: cannot start the emulator on {port}: {exc}") from None
    with emulator:
        yield f"started the offline Bybit emulator on {emulator.url} (stops with this command)"
