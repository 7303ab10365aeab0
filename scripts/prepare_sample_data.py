"""Copy the real Bybit sample candles into user_data and derive the missing 1h mark candles.

Freqtrade's futures backtests need a 1h mark-price file per pair. Only BTC and ETH have real ones
in the sample; for the others this derives mark candles from the pair's own 3m trade candles
(resampled to 1h). Mark and last price differ by basis points on Bybit linear perpetuals, so this is
a close approximation, and every derived file is listed in PROVENANCE.md next to the data.
Run once by hand; its output is committed.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd

PAIRS = ["BTC", "ETH", "SOL", "BNB", "ADA", "DOGE", "DOT"]


def derive_mark(candles: pd.DataFrame) -> pd.DataFrame:
    """1h OHLC from 3m trade candles; volume is NaN as in Bybit's real mark files."""
    hourly = (
        candles.set_index("date")
        .resample("1h", label="left", closed="left")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last"})
        .dropna()
        .reset_index()
    )
    hourly["volume"] = float("nan")
    return hourly[["date", "open", "high", "low", "close", "volume"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=Path("../shared/data/bybit/futures"))
    parser.add_argument("--dest", type=Path, default=Path("user_data/data/bybit/futures"))
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    derived: list[str] = []
    for base in PAIRS:
        stem = f"{base}_USDT_USDT"
        for suffix in ("3m-futures", "1m-futures", "1h-mark", "1h-funding_rate"):
            src = args.source / f"{stem}-{suffix}.feather"
            if src.exists():
                shutil.copy2(src, args.dest / src.name)
        mark = args.dest / f"{stem}-1h-mark.feather"
        if not mark.exists():
            candles = pd.read_feather(args.dest / f"{stem}-3m-futures.feather")
            derive_mark(candles).to_feather(mark)
            derived.append(mark.name)
    print("derived:", ", ".join(derived) or "nothing")


if __name__ == "__main__":
    main()
