"""Command line: serve the emulator until stopped, or wrap one command with it.

    python -m bybit_emulator --port 18765 [--data-dir DIR] [--wall-clock] [--log FILE]
    python -m bybit_emulator --port 18765 --log FILE -- freqtrade backtesting ...
    python -m bybit_emulator --data-dir DIR --wall-clock --account KEY:SECRET[:BALANCE] \
        [--maker-fee 0.0002] [--taker-fee 0.00055] [--slippage-bps 0] [--test-control]

`--account` (repeatable) switches the private API on; `--account-env VAR` reads the same spec
from an environment variable, which keeps the secret out of the process list.

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
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import FrameType

from .accounts import DEFAULT_MAKER_FEE, DEFAULT_TAKER_FEE, AccountConfig, parse_account_spec
from .candles import CandleSource
from .server import DEFAULT_IDLE_TIMEOUT_S, Emulator, start_emulator

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
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="KEY:SECRET[:BALANCE]",
        help="an account for the private API (repeatable); balance in USDT, default 10000",
    )
    parser.add_argument(
        "--account-env",
        action="append",
        default=[],
        metavar="VAR",
        help="like --account, read from environment variable VAR (keeps the secret out of argv)",
    )
    parser.add_argument("--maker-fee", type=_decimal, default=DEFAULT_MAKER_FEE)
    parser.add_argument("--taker-fee", type=_decimal, default=DEFAULT_TAKER_FEE)
    parser.add_argument(
        "--slippage-bps", type=_decimal, default=Decimal(0), help="taker fills move against you"
    )
    parser.add_argument(
        "--test-control",
        action="store_true",
        help="serve /_control/price and /_control/state (tests only: lets anyone move prices)",
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S, help="seconds"
    )
    return parser


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value


def _accounts(args: argparse.Namespace) -> list[AccountConfig]:
    fees = {"maker_fee": args.maker_fee, "taker_fee": args.taker_fee}
    specs = [(spec, f"--account #{i + 1}") for i, spec in enumerate(args.account)]
    for variable in args.account_env:
        value = os.environ.get(variable)
        if not value:
            raise ValueError(f"--account-env: environment variable {variable} is not set")
        specs.append((value, f"${variable}"))
    accounts = []
    for spec, where in specs:
        try:
            accounts.append(parse_account_spec(spec, **fees))
        except ValueError as exc:  # never echo the spec: it holds the secret
            raise ValueError(f"{where}: {exc}") from None
    return accounts


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
        accounts = _accounts(args)
    except ValueError as exc:
        print(f"bybit emulator: {exc}", file=sys.stderr)
        return 2
    try:
        emulator = start_emulator(
            args.port,
            log_path=args.log,
            candles=candles,
            accounts=accounts,
            test_control=args.test_control,
            slippage_bps=args.slippage_bps,
            idle_timeout_s=args.idle_timeout,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = "is already in use"
        else:
            reason = f"cannot be listened on: {exc.strerror or exc}"
        print(f"bybit emulator: port {args.port} on 127.0.0.1 {reason}", file=sys.stderr)
        return 2
    extra = f", {len(accounts)} account(s)" if accounts else ""
    extra += ", test control ON" if args.test_control else ""
    print(f"bybit emulator on {emulator.url}{extra}", file=sys.stderr, flush=True)
    with emulator:
        return _run_command(command, emulator) if command else _serve_until_signal()


if __name__ == "__main__":
    sys.exit(main())
