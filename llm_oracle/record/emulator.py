"""The offline Bybit emulator that `user_data/config.offline.json` points ccxt at.

When the merged config sends every ccxt URL to one port on 127.0.0.1 (the offline overlay),
`record` needs an emulator: one is started in this process for the length of the run (it dies
with `record`, whatever ends it). When an emulator already answers on that port (another
`record`'s, which would vanish when that run ends, taking this run's next child with it), this
run starts its own on a free port and points ccxt there (`repoint`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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


def repoint(config: dict[str, Any], port: int) -> dict[str, Any]:
    """The config with every ccxt API URL on loopback moved to `port`."""
    exchange = dict(config.get("exchange") or {})
    for section in ("ccxt_config", "ccxt_async_config"):
        block = dict(exchange.get(section) or {})
        urls = dict(block.get("urls") or {})
        api = urls.get("api")
        if isinstance(api, dict):
            urls["api"] = {k: _moved(str(v), port) for k, v in api.items()}
        elif isinstance(api, str):
            urls["api"] = _moved(api, port)
        else:
            continue
        block["urls"] = urls
        exchange[section] = block
    return {**config, "exchange": exchange}


def _moved(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


@contextmanager
def offline_emulator(port: int) -> Iterator[tuple[str, int]]:
    """This run's own emulator for the block: on 127.0.0.1:port, or on a free port when an
    emulator (another run's) answers there. Yields a line saying which, and its port.

    Raises SystemExit when something else holds the port."""
    from bybit_emulator import start_emulator  # only offline recordings need it

    found = answers_like_bybit(port)
    if found is False:
        raise SystemExit(
            f"llm-oracle record: 127.0.0.1:{port} (the offline overlay's exchange) is taken by "
            "something that is not the Bybit emulator; stop it or change the overlay's port"
        )
    try:
        emulator = start_emulator(0 if found else port)
    except OSError:
        if not answers_like_bybit(port):
            raise SystemExit(f"llm-oracle record: cannot start the emulator on {port}") from None
        emulator = start_emulator(0)  # another run started one there in the meantime
    with emulator:
        line = f"started the offline Bybit emulator on {emulator.url} (stops with this command)"
        if emulator.port != port:
            line += f"; 127.0.0.1:{port} serves another run, ccxt points here instead"
        yield line, emulator.port
