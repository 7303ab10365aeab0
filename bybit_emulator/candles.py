"""Candle source: Freqtrade feather files served as Bybit klines, mark klines and funding rates.

Two modes share one class:
- historical (`CandleSource.historical`): the files' own timestamps, everything visible. Enough
  for backtesting and download-data tests.
- wall-clock (`CandleSource.wall_clock`): the sample is shifted by a whole number of days so that
  it runs past "now", and only candles that have started by now are visible. A coarser candle
  still forming is built from the finer candles started so far; the finest forming candle is
  served whole (Freqtrade drops the forming candle anyway). `freqtrade trade --dry-run` needs
  this mode: it calls data older than a few candles outdated.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal

MINUTE_MS = 60_000
DAY_MS = 1440 * MINUTE_MS

# Bybit kline interval -> minutes. W and M are left out: calendar-aligned, not epoch-aligned.
BYBIT_INTERVALS: dict[str, int] = {
    "1": 1,
    "3": 3,
    "5": 5,
    "15": 15,
    "30": 30,
    "60": 60,
    "120": 120,
    "240": 240,
    "360": 360,
    "720": 720,
    "D": 1440,
}

PriceKind = Literal["trade", "mark"]

_FILE_RE = re.compile(
    r"^(?P<base>[A-Z0-9]+)_USDT_USDT-(?P<num>\d+)(?P<unit>[mhd])-(?P<kind>futures|mark|funding_rate)"
    r"\.feather$"
)
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440}


class UnsupportedInterval(ValueError):
    """The data cannot produce candles of this interval (e.g. 1m or 5m from 3m files)."""


@dataclass(frozen=True)
class Candle:
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True)
class Snapshot:
    """What a ticker or order book needs about the newest visible moment of one symbol."""

    time_ms: int
    last: Candle
    prev_price_24h: float
    prev_price_1h: float
    high_24h: float
    low_24h: float
    volume_24h: float
    turnover_24h: float
    mark_price: float
    funding_rate: float | None


@dataclass(frozen=True)
class _Series:
    step_ms: int
    candles: list[Candle]
    starts: list[int]


def _merge(start_ms: int, group: list[Candle]) -> Candle:
    return Candle(
        start_ms=start_ms,
        open=group[0].open,
        high=max(c.high for c in group),
        low=min(c.low for c in group),
        close=group[-1].close,
        volume=math.fsum(c.volume for c in group),
    )


def _resample(series: _Series, interval_ms: int) -> _Series:
    """Complete buckets only: a bucket missing candles would be a wrong candle, not a short one."""
    if interval_ms == series.step_ms:
        return series
    per_bucket = interval_ms // series.step_ms
    out: list[Candle] = []
    group: list[Candle] = []
    bucket = None
    for candle in series.candles:
        start = candle.start_ms - candle.start_ms % interval_ms
        if start != bucket:
            if bucket is not None and len(group) == per_bucket:
                out.append(_merge(bucket, group))
            bucket, group = start, []
        group.append(candle)
    if bucket is not None and len(group) == per_bucket:
        out.append(_merge(bucket, group))
    return _Series(interval_ms, out, [c.start_ms for c in out])


def _read_feather(path: Path, step_ms: int) -> _Series:
    import pandas as pd  # only here: the rest of the emulator is standard library

    frame = pd.read_feather(path).sort_values("date").drop_duplicates("date")
    starts = frame["date"].dt.as_unit("ms").astype("int64").tolist()
    candles = [
        Candle(int(t), float(o), float(h), float(lo), float(c), float(v))
        for t, o, h, lo, c, v in zip(
            starts,
            frame["open"].tolist(),
            frame["high"].tolist(),
            frame["low"].tolist(),
            frame["close"].tolist(),
            frame["volume"].tolist(),
            strict=True,
        )
    ]
    return _Series(step_ms, candles, [c.start_ms for c in candles])


class CandleSource:
    """Serves the candles of a directory of Freqtrade futures feather files.

    Files: `<BASE>_USDT_USDT-<tf>-futures.feather` (trade candles), `-<tf>-mark.feather` and
    `-<tf>-funding_rate.feather` (rate in `open`). Times given to and returned by the public methods
    are exchange times (data time + shift).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        shift_ms: int = 0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"candle data directory not found: {self.data_dir}")
        self.shift_ms = shift_ms
        self._clock = clock
        self._files: dict[tuple[str, str], list[tuple[int, Path]]] = {}
        for path in sorted(self.data_dir.glob("*.feather")):
            match = _FILE_RE.match(path.name)
            if match:
                step = int(match["num"]) * _UNIT_MINUTES[match["unit"]] * MINUTE_MS
                key = (match["base"], match["kind"])
                self._files.setdefault(key, []).append((step, path))
        self._lock = threading.Lock()
        self._raw: dict[tuple[str, str, int], _Series] = {}
        self._resampled: dict[tuple[str, str, int], _Series] = {}

    @classmethod
    def historical(cls, data_dir: Path) -> CandleSource:
        return cls(data_dir)

    @classmethod
    def wall_clock(
        cls,
        data_dir: Path,
        *,
        lead: timedelta = timedelta(days=1),
        clock: Callable[[], float] = time.time,
    ) -> CandleSource:
        """Shift the sample so that at least `lead` of it lies in the future at construction.

        The shift is a whole number of days so 1h mark candles and 8-hourly funding stay on their
        real boundaries; the shift is fixed, so a candle never changes once served complete.
        """
        source = cls(data_dir, clock=clock)
        end = source.data_end_ms()
        if end is None:
            raise FileNotFoundError(f"no *-futures.feather candles in {data_dir}")
        now = int(clock() * 1000)
        lead_ms = int(lead.total_seconds() * 1000)
        # Caches hold data time, so setting the shift after loading is safe.
        source.shift_ms = -(-(now + lead_ms - end) // DAY_MS) * DAY_MS
        return source

    # ---- discovery -------------------------------------------------------------------------

    def bases(self) -> list[str]:
        """Base coins with trade candles, e.g. `["ADA", "BNB", ...]`."""
        return sorted({base for base, kind in self._files if kind == "futures"})

    def has_data(self, base: str) -> bool:
        return (base, "futures") in self._files

    def data_end_ms(self) -> int | None:
        """Start of the newest trade candle over all files, in data time."""
        ends = [self._trade(b).starts[-1] for b in self.bases() if self._trade(b).starts]
        return max(ends) if ends else None

    def now_ms(self) -> int | None:
        """Exchange time now in wall-clock mode; None in historical mode."""
        return int(self._clock() * 1000) if self._clock is not None else None

    # ---- queries -----------------------------------------------------------------------------

    def klines(
        self,
        base: str,
        interval: str,
        *,
        kind: PriceKind = "trade",
        start: int | None = None,
        end: int | None = None,
        limit: int = 200,
    ) -> list[Candle]:
        """Candles newest first, as Bybit sends them.

        With `start` and no `end` the oldest `limit` candles from `start` come back (how ccxt's
        `since` pages forwards); otherwise the newest `limit` up to `end` or now.
        """
        if interval not in BYBIT_INTERVALS:
            raise UnsupportedInterval(f"interval {interval!r} is not supported")
        interval_ms = BYBIT_INTERVALS[interval] * MINUTE_MS
        series = self._series_for(base, kind, interval_ms)
        if series is None:
            return []
        candles, starts = series.candles, series.starts
        now_d = self._now_data()
        hi = len(starts) if now_d is None else bisect.bisect_right(starts, now_d)
        if end is not None:
            hi = min(hi, bisect.bisect_right(starts, end - self.shift_ms))
        lo = 0 if start is None else bisect.bisect_left(starts, start - self.shift_ms)
        if lo >= hi:
            return []
        if start is not None and end is None:
            chosen = candles[lo : min(hi, lo + limit)]
        else:
            chosen = candles[max(lo, hi - limit) : hi]
        if now_d is not None and chosen and chosen[-1].start_ms + interval_ms > now_d + 1:
            # The bucket holding "now" is still forming: rebuild it from what has happened so far.
            chosen = [*chosen[:-1], self._partial(base, chosen[-1], now_d)]
        return [replace(c, start_ms=c.start_ms + self.shift_ms) for c in reversed(chosen)]

    def funding_rates(
        self, base: str, *, start: int | None = None, end: int | None = None, limit: int = 200
    ) -> list[tuple[int, float]]:
        """(timestamp, rate) newest first, at most `limit`, within [start, end]."""
        files = self._files.get((base, "funding_rate"))
        if not files:
            return []
        step, _ = min(files)
        series = self._load(base, "funding_rate", step)
        starts = series.starts
        now_d = self._now_data()
        hi = len(starts) if now_d is None else bisect.bisect_right(starts, now_d)
        if end is not None:
            hi = min(hi, bisect.bisect_right(starts, end - self.shift_ms))
        lo = 0 if start is None else bisect.bisect_left(starts, start - self.shift_ms)
        chosen = series.candles[max(lo, hi - limit) : hi] if lo < hi else []
        return [(c.start_ms + self.shift_ms, c.open) for c in reversed(chosen)]

    def snapshot(self, base: str) -> Snapshot | None:
        """The newest visible trade candle (or the partial one now) with 24h statistics."""
        if not self.has_data(base):
            return None
        step = self._base_step(base, "futures")
        interval = next((k for k, v in BYBIT_INTERVALS.items() if v * MINUTE_MS == step), None)
        if interval is None:
            return None
        day = self.klines(base, interval, limit=DAY_MS // step)
        if not day:
            return None
        last = day[0]
        hour_back = min(len(day) - 1, 3_600_000 // step - 1)
        try:
            marks = self.klines(base, "60", kind="mark", end=last.start_ms, limit=1)
        except UnsupportedInterval:
            marks = []
        rates = self.funding_rates(base, end=last.start_ms, limit=1)
        return Snapshot(
            time_ms=last.start_ms,
            last=last,
            prev_price_24h=day[-1].open,
            prev_price_1h=day[hour_back].open,
            high_24h=max(c.high for c in day),
            low_24h=min(c.low for c in day),
            volume_24h=math.fsum(c.volume for c in day),
            turnover_24h=math.fsum(c.volume * (c.high + c.low + c.close) / 3 for c in day),
            mark_price=marks[0].close if marks else last.close,
            funding_rate=rates[0][1] if rates else None,
        )

    # ---- internals ---------------------------------------------------------------------------

    def _trade(self, base: str) -> _Series:
        """The finest trade candles of a base."""
        return self._load(base, "futures", self._base_step(base, "futures"))

    def _now_data(self) -> int | None:
        now = self.now_ms()
        return None if now is None else now - self.shift_ms

    def _base_step(self, base: str, kind: str) -> int:
        return min(step for step, _ in self._files[(base, kind)])

    def _load(self, base: str, kind: str, step: int) -> _Series:
        key = (base, kind, step)
        with self._lock:
            series = self._raw.get(key)
            if series is None:
                path = dict(self._files[(base, kind)])[step]
                series = self._raw[key] = _read_feather(path, step)
            return series

    def _source(self, base: str, kind: PriceKind, interval_ms: int) -> tuple[str, int] | None:
        """(file kind, step) to build `interval_ms` candles from: the coarsest file dividing it.

        Mark candles without a mark file that divides the interval come from trade candles: mark
        and last price differ by basis points on liquid perpetuals, a close approximation.
        """
        file_kinds = ["mark", "futures"] if kind == "mark" else ["futures"]
        for file_kind in file_kinds:
            steps = [s for s, _ in self._files.get((base, file_kind), []) if interval_ms % s == 0]
            if steps:
                return file_kind, max(steps)
        return None

    def _series_for(self, base: str, kind: PriceKind, interval_ms: int) -> _Series | None:
        if not self.has_data(base):
            return None
        source = self._source(base, kind, interval_ms)
        if source is None:
            raise UnsupportedInterval(f"no {base} data divides {interval_ms // MINUTE_MS}m candles")
        file_kind, step = source
        key = (base, file_kind, interval_ms)
        with self._lock:
            cached = self._resampled.get(key)
        if cached is None:
            cached = _resample(self._load(base, file_kind, step), interval_ms)
            with self._lock:
                self._resampled[key] = cached
        return cached

    def _partial(self, base: str, candle: Candle, now_d: int) -> Candle:
        # Built from the finest trade candles even for mark klines: a forming mark candle is
        # approximated by last price, like derived mark candles are.
        raw = self._trade(base)
        lo = bisect.bisect_left(raw.starts, candle.start_ms)
        hi = bisect.bisect_right(raw.starts, now_d)
        return _merge(candle.start_ms, raw.candles[lo:hi]) if lo < hi else candle
