"""Write closed trades into a Freqtrade trades database, as an earlier session of the bot would.

Run as a script (`python -m tests.seed_trades DB_URL JSON`), so Freqtrade's SQLAlchemy session
is set up in a process of its own and never in the test process.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime


def seed(db_url: str, trades: list[dict]) -> None:
    from freqtrade.enums import TradingMode
    from freqtrade.persistence import Trade, init_db

    init_db(db_url)
    for row in trades:
        open_date = datetime.fromisoformat(row["open_date"])
        close_date = datetime.fromisoformat(row["close_date"])
        trade = Trade(
            pair=row["pair"],
            base_currency=row["pair"].split("/")[0],
            stake_currency="USDT",
            stake_amount=row["stake_amount"],
            amount=row["amount"],
            amount_requested=row["amount"],
            open_rate=row["open_rate"],
            open_date=open_date,
            close_rate=row["close_rate"],
            close_date=close_date,
            close_profit_abs=row["profit"],
            close_profit=row["profit"] / row["stake_amount"],
            realized_profit=row["profit"],
            is_open=False,
            exit_reason=row["exit_reason"],
            fee_open=0.00055,
            fee_close=0.00055,
            exchange="bybit",
            strategy="GeminiOracleStrategy",
            timeframe=3,
            leverage=1.0,
            is_short=False,
            trading_mode=TradingMode.FUTURES,
        )
        Trade.session.add(trade)
    Trade.commit()


if __name__ == "__main__":
    seed(sys.argv[1], json.loads(sys.argv[2]))
