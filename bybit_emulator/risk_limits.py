"""Pinned Bybit risk-limit tiers, served as `/v5/market/risk-limit` pages.

The source is a Freqtrade leverage-tier cache (`{"updated": ..., "data": {pair: [tier, ...]}}`)
whose tiers keep the raw Bybit rows in `info`; those rows are served back verbatim.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Real Bybit tiers from August 2024, pinned for the same reason as the instruments.
DEFAULT_TIERS_PATH = Path(__file__).with_name("data") / "leverage_tiers_2024-08.json"

# Bybit pages category=linear by symbol, not by row ("returns a data set of 15 symbols in each
# response", v5 docs). Paging by symbol matters to ccxt: it writes the page cursor into the last
# row of each page, so a page boundary inside one symbol's tiers would split it oddly.
SYMBOLS_PER_PAGE = 15


class RiskLimitTable:
    """Raw risk-limit rows per Bybit symbol, in the file's order."""

    def __init__(self, path: Path = DEFAULT_TIERS_PATH) -> None:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        self._rows: dict[str, list[dict[str, Any]]] = {}
        for tiers in raw["data"].values():
            rows = sorted((dict(t["info"]) for t in tiers), key=lambda r: int(r["id"]))
            if rows:
                self._rows[str(rows[0]["symbol"])] = rows

    @property
    def symbols(self) -> list[str]:
        return list(self._rows)

    def rows(self, symbol: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._rows.get(symbol, [])]

    def page(
        self, symbol: str | None, cursor: int, symbols_per_page: int = SYMBOLS_PER_PAGE
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Rows of one page and the next page's cursor (None on the last page).

        The cursor is the index of the first symbol of the page.
        """
        symbols = [symbol] if symbol else self.symbols
        chosen = symbols[cursor : cursor + symbols_per_page]
        rows = [row for s in chosen for row in self.rows(s)]
        following = cursor + symbols_per_page
        return rows, (following if following < len(symbols) else None)
