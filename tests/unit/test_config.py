"""Configuration: environment, CLI overrides, and one clear line for every bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.config import Config, ConfigError


def test_defaults_match_the_contract() -> None:
    config = Config.from_env({})
    assert config.upstream == "http://127.0.0.1:8000"
    assert config.upstream_api == "auto"
    assert config.listen == "0.0.0.0:8080"
    assert config.redis_url == "memory://"
    assert config.ttl_seconds == 2_592_000
    assert config.auth == "none"
    assert config.max_body_bytes == 8_388_608
    assert (config.log_format, config.log_level) == ("json", "info")


def test_flags_override_the_environment() -> None:
    env = {"CONVOSTORE_UPSTREAM": "http://engine:9000/", "CONVOSTORE_LISTEN": "127.0.0.1:1"}
    config = Config.from_env(env, listen="127.0.0.1:9999")
    assert config.upstream == "http://engine:9000" and config.listen_port == 9999


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"CONVOSTORE_UPSTREAM": "ftp://x"}, "CONVOSTORE_UPSTREAM"),
        ({"CONVOSTORE_UPSTREAM_API": "grpc"}, "CONVOSTORE_UPSTREAM_API"),
        ({"CONVOSTORE_LISTEN": "8080"}, "CONVOSTORE_LISTEN"),
        ({"REDIS_URL": "mysql://x"}, "REDIS_URL"),
        ({"CONVOSTORE_TTL_SECONDS": "-5"}, "CONVOSTORE_TTL_SECONDS"),
        ({"CONVOSTORE_MAX_BODY_BYTES": "lots"}, "CONVOSTORE_MAX_BODY_BYTES"),
        ({"CONVOSTORE_AUTH": "magic"}, "CONVOSTORE_AUTH"),
        ({"CONVOSTORE_AUTH": "api_keys"}, "CONVOSTORE_AUTH"),
        ({"CONVOSTORE_LOG_FORMAT": "xml"}, "CONVOSTORE_LOG_FORMAT"),
        ({"CONVOSTORE_CONFIG": "/nonexistent/policy.yaml"}, "CONVOSTORE_CONFIG"),
        ({"CONVOSTORE_REDIS_WAIT_REPLICAS": "-1"}, "CONVOSTORE_REDIS_WAIT_REPLICAS"),
        ({"CONVOSTORE_REDIS_WAIT_REPLICAS": "two"}, "CONVOSTORE_REDIS_WAIT_REPLICAS"),
        ({"CONVOSTORE_REDIS_WAIT_TIMEOUT_MS": "0"}, "CONVOSTORE_REDIS_WAIT_TIMEOUT_MS"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as err:
        Config.from_env(env)
    message = str(err.value)
    assert message.startswith(setting) and "\n" not in message


def test_policy_file_unknown_key_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("packs: {}\nflavour: vanilla\n")
    with pytest.raises(ConfigError, match="unknown key 'flavour'"):
        Config.from_env({"CONVOSTORE_CONFIG": str(policy)})
    policy.write_text("tenants:\n  acme:\n    api_keys: [sk-1]\n")
    config = Config.from_env({"CONVOSTORE_CONFIG": str(policy), "CONVOSTORE_AUTH": "api_keys"})
    assert config.policy["tenants"]["acme"]["api_keys"] == ["sk-1"]


def test_cli_stops_with_one_line_naming_the_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "serve", "--listen", "nowhere"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CONVOSTORE_LISTEN" in lines[0]


def test_redis_wait_settings_are_read() -> None:
    config = Config.from_env(
        {"CONVOSTORE_REDIS_WAIT_REPLICAS": "2", "CONVOSTORE_REDIS_WAIT_TIMEOUT_MS": "250"}
    )
    assert (config.redis_wait_replicas, config.redis_wait_timeout_ms) == (2, 250)
    assert Config.from_env({}).redis_wait_replicas == 0
