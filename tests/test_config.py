from pathlib import Path

import pytest

from llm_oracle.config import BackendName, OracleConfigError, load_config


def test_defaults_are_valid() -> None:
    cfg = load_config(None)
    assert cfg.backend is BackendName.REPLAY
    assert cfg.replay.on_miss == "hold"
    assert cfg.resolved_journal_path(Path("/ud")) == Path("/ud/oracle/journal.sqlite")
    assert load_config({"journal_path": "/abs/j.sqlite"}).resolved_journal_path(
        Path("/ud")
    ) == Path("/abs/j.sqlite")


def test_typo_names_the_key_and_the_allowed_keys() -> None:
    with pytest.raises(OracleConfigError) as err:
        load_config({"jornal_path": "x"})
    message = str(err.value)
    assert "llm_oracle.jornal_path: unknown key" in message
    assert "journal_path" in message and "backend" in message


def test_nested_typo_lists_nested_keys() -> None:
    with pytest.raises(OracleConfigError, match=r"llm_oracle\.replay\.onmiss.*on_miss"):
        load_config({"replay": {"onmiss": "hold"}})


def test_bad_enum_lists_allowed_values() -> None:
    with pytest.raises(OracleConfigError, match=r"llm_oracle\.backend: 'gemni'.*'rules'.*'replay'"):
        load_config({"backend": "gemni"})
    with pytest.raises(OracleConfigError, match=r"llm_oracle\.fallback.*'hold'.*'rules'"):
        load_config({"fallback": "panic"})


@pytest.mark.parametrize(
    ("replay", "fragment"),
    [
        ({"on_miss": "skip"}, "hold, rules, call:<backend>"),
        ({"source": "rules", "on_miss": "call:gemini"}, "must call the replay source"),
        ({"source": "replay"}, "not 'replay'"),
    ],
)
def test_bad_replay_settings(replay: dict, fragment: str) -> None:
    with pytest.raises(OracleConfigError, match=fragment):
        load_config({"replay": replay})


def test_out_of_range_numbers_are_named() -> None:
    with pytest.raises(OracleConfigError, match=r"llm_oracle\.timeout_s"):
        load_config({"timeout_s": 0})
    with pytest.raises(OracleConfigError, match="min_stop must not exceed"):
        load_config({"rules": {"min_stop": 0.05, "max_stop": 0.01}})


def test_block_must_be_an_object() -> None:
    with pytest.raises(OracleConfigError, match="must be an object"):
        load_config(["rules"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"enabled": "no"}, "enabled"),
        ({"enabled": "false"}, "enabled"),
        ({"enabled": 0}, "enabled"),
        ({"timeout_s": True}, "timeout_s"),
        ({"timeout_s": "10"}, "timeout_s"),
        ({"prompt_candles": 24.0}, "prompt_candles"),
        ({"progress": 1}, "progress"),
        ({"gemini": {"max_output_tokens": False}}, "gemini.max_output_tokens"),
        ({"gemini": {"limits": {"rpm": "60"}}}, "gemini.limits.rpm"),
    ],
)
def test_types_are_strict(block: dict, key: str) -> None:
    with pytest.raises(OracleConfigError, match=rf"llm_oracle\.{key}: Input should be"):
        load_config(block)


def test_json_numbers_and_strings_read_as_their_types() -> None:
    cfg = load_config(
        {
            "timeout_s": 10,  # an integer is a valid float
            "enabled": False,
            "backend": "rules",  # enum values and paths come as strings
            "journal_path": "j.sqlite",
            "rules": {"min_stop": 0.004, "reward_risk": 2},
            "gemini": {"temperature": None, "seed": None},
        }
    )
    assert cfg.timeout_s == 10.0 and isinstance(cfg.timeout_s, float)
    assert cfg.enabled is False and cfg.backend is BackendName.RULES
    assert cfg.journal_path == Path("j.sqlite") and cfg.rules.reward_risk == 2.0
    assert cfg.gemini.temperature is None and cfg.gemini.seed is None


def test_a_value_json_cannot_hold_is_refused_by_name() -> None:
    with pytest.raises(OracleConfigError, match="not a JSON value"):
        load_config({"journal_path": object()})
