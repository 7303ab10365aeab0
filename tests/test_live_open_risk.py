"""Five pairs signal on one candle while their entries rest unfilled: the open-risk cap holds,
and still holds when one of them fills while the others wait.

Freqtrade creates a trade with amount 0 when it places the entry order and fills the amount in
only when the order fills. Counting filled amounts, every pair signalling on the same candle
would pass the cap; the strategy counts an open entry order at its requested size.

The five pairs are the BTC sample scaled to each coin's price range: requests are relative, so
all five signal, and the oracle confirms, on the same candle.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from tests.factories import DATA_DIR
from tests.live_bot import SYMBOL, live_bot

pytestmark = pytest.mark.integration

SCALE = {"BTC": 1.0, "ETH": 40.0, "SOL": 700.0, "BNB": 160.0, "ADA": 150_000.0}
PAIRS = [f"{coin}/USDT:USDT" for coin in SCALE]
# Tight enough to bind: each entry here risks about 0.06% of equity at its stop.
MAX_OPEN_RISK = 0.0015
PRICE_COLUMNS = ["open", "high", "low", "close"]


def five_pairs_from_btc(target: Path) -> Path:
    target.mkdir(parents=True)
    for suffix in ("3m-futures", "1h-mark"):
        frame = pd.read_feather(DATA_DIR / f"BTC_USDT_USDT-{suffix}.feather")
        for coin, divisor in SCALE.items():
            scaled = frame.copy()
            scaled[PRICE_COLUMNS] = scaled[PRICE_COLUMNS] / divisor
            scaled.to_feather(target / f"{coin}_USDT_USDT-{suffix}.feather")
    return target


def test_pending_entries_count_against_the_open_risk_cap(tmp_path: Path) -> None:
    data = five_pairs_from_btc(tmp_path / "data")
    with live_bot(
        tmp_path,
        data_dir=data,
        pairs=PAIRS,
        money_rules={"max_open_risk": MAX_OPEN_RISK},
    ) as bot:
        for coin in SCALE:
            bot.pin_price(f"{coin}USDT")  # no feed move: the resting entries never fill
        refused = "would exceed 0.15% of equity"
        bot.wait_for_log(refused, bot.after_signal(90))
        # Every pair signalled on the candle: each either placed an entry or was refused.
        bot.wait_until(
            lambda: len(bot.trades()) + bot.log().count(refused) >= len(PAIRS),
            30,
            "a decision for every pair",
        )
        trades = bot.trades()
        assert 1 <= len(trades) < len(PAIRS)
        assert all(t["amount"] == 0 for t in trades)  # all still pending
        assert [o for o in bot.exchange_orders(SYMBOL) if o["orderStatus"] == "Filled"] == []
        # The refusal names the open risk it counted: the pending entries at their requested
        # size (with filled amounts only it would be 0), the accepted ones within the cap and
        # the refused one beyond it.
        line = next(x for x in bot.log().splitlines() if refused in x)
        found = re.search(
            r"open risk ([\d.]+) \+ ([\d.]+) would exceed 0.15% of equity ([\d.]+)", line
        )
        assert found, line
        counted, new, equity = (float(v) for v in found.groups())
        assert 0 < counted <= MAX_OPEN_RISK * equity < counted + new
        # Each pending entry counts what the refused one would have: the same stake, leverage
        # and (relative) decision on every pair.
        assert counted == pytest.approx(len(trades) * new, rel=0.05)

        # Filled plus pending: fill the first entry. Its risk now counts at the filled amount and
        # the stop it got, the same as it counted pending (neither dropped nor doubled), and the
        # refused pairs, asked again on every loop, still stay out.
        first = trades[0]
        symbol = first["pair"].split("/")[0] + "USDT"
        order = bot.entry_order(symbol)
        assert order is not None
        bot.set_price(order["price"], symbol=symbol)
        bot.wait_until(
            lambda: any(t["id"] == first["id"] and t["amount"] > 0 for t in bot.trades()),
            20,
            "the first entry to fill",
        )
        seen = bot.log().count(refused)  # later refusals come from loops after the fill
        bot.wait_until(lambda: bot.log().count(refused) > seen, 30, "a refusal after the fill")
        after = [x for x in bot.log().splitlines() if refused in x][-1]
        found = re.search(r"open risk ([\d.]+) \+ ([\d.]+) would exceed", after)
        assert found, after
        counted_after = float(found.group(1))
        assert counted_after == pytest.approx(counted, rel=0.05)
        assert counted_after <= MAX_OPEN_RISK * equity
        now = bot.trades()
        assert len(now) == len(trades)  # nobody got in when the fill landed
        assert [t["amount"] > 0 for t in now].count(True) == 1  # one filled, the rest pending
        bot.stop()
    assert bot.secrets_found() == []
