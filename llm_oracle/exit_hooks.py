"""Hooks that run once when the interpreter exits, in the order they were registered.

Freqtrade has no end-of-backtest hook, so the strategy prints its summary at exit. The registry
lives here, in an importable module, and not in the strategy file: Freqtrade loads strategy files
outside sys.modules, so hyperopt pickles the strategy class by value together with every global
its methods reach. A module-level list of strategy instances in the strategy file would travel
with the class and be rebuilt before the class is complete ("can't instantiate abstract class").
"""

from __future__ import annotations

import atexit
from collections.abc import Callable

_hooks: list[Callable[[bool], None]] = []


def register(hook: Callable[[bool], None]) -> None:
    """Call `hook(is_last)` at exit; `is_last` is True for the last hook registered."""
    if not _hooks:
        atexit.register(_run)
    _hooks.append(hook)


def _run() -> None:
    for i, hook in enumerate(_hooks):
        hook(i == len(_hooks) - 1)
