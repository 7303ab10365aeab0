import os
import subprocess
import sys

from llm_oracle.prompt import PROMPT_VERSION, decision_key, render
from tests.factories import ROOT, make_request

_KEY_SCRIPT = (
    "from tests.factories import make_request\n"
    "from llm_oracle.prompt import decision_key, render\n"
    "r = make_request()\n"
    "print(decision_key(r, 'gemini', 'gemini-x', 'v1'))\n"
    "print(hash(render(r).user))\n"
)


def _key_in_fresh_interpreter(hash_seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", _KEY_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_key_is_stable_across_interpreter_runs() -> None:
    first = _key_in_fresh_interpreter("1")
    second = _key_in_fresh_interpreter("2")
    assert first[0] == second[0]
    assert first[0] == decision_key(make_request(), "gemini", "gemini-x", "v1")
    assert first[1] != second[1]  # proves the runs really differed in hash seed


def test_key_changes_with_every_input() -> None:
    base = decision_key(make_request(), "rules", "m1", "v1")
    assert base != decision_key(make_request(rsi=55.5), "rules", "m1", "v1")
    assert base != decision_key(make_request(close_shift=0.01), "rules", "m1", "v1")
    assert base != decision_key(make_request(), "gemini", "m1", "v1")
    assert base != decision_key(make_request(), "rules", "m2", "v1")
    assert base != decision_key(make_request(), "rules", "m1", "v2")


def test_key_ignores_float_noise_below_rounding() -> None:
    assert decision_key(make_request(rsi=55.0), "r", "m", "v") == decision_key(
        make_request(rsi=55.000001), "r", "m", "v"
    )


def test_render_is_deterministic_and_puts_static_text_first() -> None:
    a, b = render(make_request()), render(make_request())
    assert a == b
    assert PROMPT_VERSION
    assert "RSI7 55.0" in a.user
    assert a.user.splitlines()[0] == "purpose: entry"
    # Market data lives in the user part only: the system part is identical for every request.
    assert render(make_request(rsi=20.0)).system == a.system


def test_key_changes_with_the_backend_settings() -> None:
    base = decision_key(make_request(), "rules", "m1", "v1", '{"min_stop":0.003}')
    assert base != decision_key(make_request(), "rules", "m1", "v1", '{"min_stop":0.004}')
    assert base == decision_key(make_request(), "rules", "m1", "v1", '{"min_stop":0.003}')
