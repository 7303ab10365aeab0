"""Each `record` has its own offline emulator: a second run never depends on the first's.

Another run's emulator on the overlay's port would vanish when that run ends (and take this
run's next freqtrade child with it): this run starts its own on a free port and points ccxt
there, and it keeps answering after the other one is gone.
"""

from __future__ import annotations

from contextlib import ExitStack

from bybit_emulator import start_emulator
from llm_oracle.record.emulator import answers_like_bybit, offline_emulator, offline_port, repoint
from tests.freqtrade_run import offline_overlay


def test_a_second_run_starts_its_own_emulator_that_outlives_the_first() -> None:
    with ExitStack() as first:
        other = first.enter_context(start_emulator(0))  # another record's emulator
        port = other.port
        with offline_emulator(port) as (line, used):
            assert used != port and "serves another run" in line, line
            first.close()  # the other run ends, its emulator with it
            assert answers_like_bybit(port) is None
            assert answers_like_bybit(used) is True
            config = repoint(offline_overlay(f"http://127.0.0.1:{port}"), used)
            assert offline_port(config) == used
        assert answers_like_bybit(used) is None  # ours stops with the run


def test_a_free_port_gets_the_emulator_the_overlay_names() -> None:
    with start_emulator(0) as probe:
        port = probe.port
    with offline_emulator(port) as (line, used):
        assert used == port and line.startswith("started the offline Bybit emulator")
        assert answers_like_bybit(port) is True
