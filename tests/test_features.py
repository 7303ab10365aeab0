"""Requests see data up to their candle only, and carry no absolute price."""

import json

import numpy as np

from llm_oracle.features import entry_requests
from llm_oracle.models import Fees, Side
from tests.factories import candidate_rows, indicator_frame

FEES = Fees(maker=0.0002, taker=0.00055)


def _requests(df, rows):
    return entry_requests(df, rows, [Side.LONG] * len(rows), FEES, timeframe="3m", n_candles=24)


def test_request_at_t_ignores_everything_after_t() -> None:
    df = indicator_frame(rows=1200)
    rows = [int(r) for r in candidate_rows(df) if 300 <= r < 1100][:20]
    full = dict(_requests(df, rows))
    for row in rows:
        truncated = df.iloc[: row + 1]
        assert dict(_requests(truncated, [row]))[row] == full[row]
        # Scramble the future: the request must not move.
        poisoned = df.copy()
        poisoned.loc[poisoned.index[row + 1 :], ["open", "high", "low", "close", "volume"]] *= 3
        assert dict(_requests(poisoned, [row]))[row] == full[row]


def test_rows_without_history_or_indicators_are_skipped() -> None:
    df = indicator_frame(rows=400)
    asked = _requests(df, [5, 100, 350])
    assert [row for row, _ in asked] == [350]  # EMA200 is NaN before row 199


def test_requests_are_relative_not_absolute() -> None:
    df = indicator_frame(rows=800)
    [(row, request)] = _requests(df, [700])
    text = request.canonical_json()
    price = df["close"].iat[row]
    assert f"{price:.1f}" not in text and str(int(price)) not in text
    payload = json.loads(text)
    assert payload["candles"][-1]["c"] == 0.0  # the latest close is the reference
    assert max(abs(c[k]) for c in payload["candles"] for k in "ohlc") < 20


def test_work_is_proportional_to_candidates() -> None:
    df = indicator_frame(rows=3000)
    rows = candidate_rows(df)
    rows = rows[rows > 250]
    assert len(_requests(df, rows.tolist())) == len(rows)
    assert len(rows) < len(df) / 3
    assert np.all(np.diff(rows) > 0)


def test_window_with_missing_values_is_skipped_not_fatal() -> None:
    df = indicator_frame(rows=800)
    df.loc[df.index[690], "volume"] = float("nan")
    asked = _requests(df, [700, 720])
    assert [row for row, _ in asked] == [720]  # 700's window holds the NaN; 720's does not


def _validated_candles(df, row: int, n: int) -> tuple:
    """Candles built the slow way, every value through the model's validators."""
    from llm_oracle.models import Candle

    window = df.iloc[row - n + 1 : row + 1]
    close = float(df["close"].iat[row])
    volume = window["volume"].to_numpy(dtype=float)
    vol_rel = volume / volume.mean()
    return tuple(
        Candle(
            o=(o / close - 1) * 100,
            h=(h / close - 1) * 100,
            l=(lo / close - 1) * 100,
            c=(c / close - 1) * 100,
            v=v,
        )  # fmt: skip
        for o, h, lo, c, v in zip(
            window["open"].to_numpy(dtype=float).tolist(),
            window["high"].to_numpy(dtype=float).tolist(),
            window["low"].to_numpy(dtype=float).tolist(),
            window["close"].to_numpy(dtype=float).tolist(),
            vol_rel.tolist(),
            strict=True,
        )
    )


def test_unvalidated_candles_equal_validated_ones_to_the_byte() -> None:
    """Candles skip validation for speed; their JSON, and so every key, must not change."""
    from llm_oracle.features import FrameArrays

    df = indicator_frame(rows=3000)
    arrays = FrameArrays(df)
    for row in range(250, 3000, 7):
        fast = arrays.candles(row, 24)
        slow = _validated_candles(df, row, 24)
        assert [c.model_dump_json() for c in fast] == [c.model_dump_json() for c in slow]


def test_a_negative_volume_is_still_refused() -> None:
    import pytest
    from pydantic import ValidationError

    from llm_oracle.features import FrameArrays

    df = indicator_frame(rows=400)
    df.loc[df.index[390], "volume"] = -5.0
    with pytest.raises(ValidationError):
        FrameArrays(df).candles(395, 24)


def test_a_review_read_from_the_whole_frame_equals_one_on_the_cut_frame() -> None:
    """Backtests read reviews from the whole frame's arrays; live cuts the frame at the candle."""
    from llm_oracle.features import FrameArrays, exit_review_at, exit_review_request
    from llm_oracle.models import Position

    df = indicator_frame(rows=1500)
    arrays = FrameArrays(df)
    position = Position(side=Side.SHORT, profit_pct=-0.41, candles_held=7, leverage=2.0)
    compared = 0
    for row in range(190, 1500, 11):
        whole = exit_review_at(arrays, row, position, FEES, timeframe="3m", n_candles=24)
        cut = exit_review_request(df.iloc[: row + 1], position, FEES, timeframe="3m", n_candles=24)
        assert (whole is None) == (cut is None)
        if whole is not None:
            assert whole.canonical_json() == cut.canonical_json()
            compared += 1
    assert compared > 100
