"""Freqtrade config files merged like Freqtrade merges them, and the freqtrade executable."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_freqtrade_config(paths: list[Path]) -> dict[str, Any]:
    """Repeated `--config` files, later ones deep-merged over earlier ones."""
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            merged = deep_merge(merged, json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"llm-oracle: cannot read config {path}: {exc}") from None
    return merged


def freqtrade_executable() -> str:
    """`freqtrade` of this interpreter's environment, else the first on PATH."""
    beside = Path(sys.executable).with_name("freqtrade")
    if beside.exists():
        return str(beside)
    found = shutil.which("freqtrade")
    if found is None:
        raise SystemExit("llm-oracle: no freqtrade executable next to Python or on PATH")
    return found
