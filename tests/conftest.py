"""Shared fixtures: one Bybit emulator per session and a private copy of the sample data."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bybit_emulator import Emulator, start_emulator
from tests.factories import DATA_DIR


@pytest.fixture(scope="session")
def sample_datadir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy, so Freqtrade's leverage-tier cache never lands in the repository's data folder."""
    target = tmp_path_factory.mktemp("data") / "bybit"
    shutil.copytree(DATA_DIR, target / "futures")
    return target


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log = tmp_path_factory.mktemp("emulator") / "requests.jsonl"
    with start_emulator(port=0, log_path=log) as emu:
        yield emu
        # (e) Every request any test made must have been one the emulator expected.
        assert emu.unexpected_requests() == []
