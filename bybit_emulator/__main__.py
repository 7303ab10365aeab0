"""Command line: serve the emulator until stopped, or wrap one command with it.

    python -m bybit_emulator --port 18765 [--data-dir DIR] [--wall-clock] [--log FILE]
    python -m bybit_emulator --port 18765 --log FILE -- freqtrade backtesting ...

The wrapped command gets BYBIT_EMULATOR_URL and NO_PROXY for 127.0.0.1 in its environment, and
its exit code becomes ours.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from .candles import CandleSource
from .server import Emulator, start_emulator

DEFAULT_PORT = 18765


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bybit_emulator",
        description="Offline Bybit v5 public-REST emulator on 127.0.0.1.",
        epilog="Anything after -- is run as a command while the emulator serves.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--data-dir", type=Path, help="Freqtrade futures *.feather candles")
    parser.add_argument(
        "--wall-clock",
        action="store_true",
        help="shift the candles to run past now (for trade --dry-run); needs --data-dir",
    )
    parser.add_argument("--log", type=Path, help="append one JSON line per request")
    return parser


def _serve_until_signal() -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop.wait(0.5):
        pass
    return 0


def _run_command(command: list[str], emulator: Emulator) -> int:
    env = dict(os.environ)
    loopback = "127.0.0.1,localhost"
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = f"{env[name]},{loopback}" if env.get(name) else loopback
    env["BYBIT_EMULATOR_URL"] = emulator.url
    try:
        proc = subprocess.Popen(command, env=env)
    except OSError as exc:
        print(f"bybit emulator: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127

    def forward(signum: int, frame: FrameType | None) -> None:
        proc.send_signal(signum)

    # SIGTERM reaches only us, so pass it on. Ctrl-C already reaches the child (same process
    # group); forwarding it too would interrupt the child twice, so we just keep waiting.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    code = proc.wait()
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    command: list[str] = []
    if "--" in args_in:
        split = args_in.index("--")
        args_in, command = args_in[:split], args_in[split + 1 :]
        if not command:
            _parser().error("no command after --")
    args = _parser().parse_args(args_in)
    if args.wall_clock and args.data_dir is None:
        _parser().error("--wall-clock needs --data-dir")

    candles = None
    if args.data_dir is not None:
        try:
            make = CandleSource.wall_clock if args.wall_clock else CandleSource.historical
            candles = make(args.data_dir)
        except FileNotFoundError as exc:
            print(f"bybit emulator: {exc}", file=sys.stderr)
            return 2
    try:
        emulator = start_emulator(args.port, log_path=args.log, candles=candles)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = "is already in use"
        else:
            reason = f"cannot be listened on: {exc.strerror or exc}"
        print(f"bybit emulator: port {args.port} on 127.0.0.1 {reason}", file=sys.stderr)
        return 2
    print(f"bybit emulator on {emulator.url}", file=sys.stderr, flush=True)
    with emulator:
        return _run_command(command, emulator) if command else _serve_until_signal()


if __name__ == "__main__":
    sys.exit(main())
