"""The policy file's schema: every key checked, every problem one line naming its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.config import Config, ConfigError, load_policy
from sidecar.policy import PolicyError, validate_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


def test_the_shipped_example_loads_and_holds_every_key() -> None:
    config = Config.from_env({"CONVOSTORE_CONFIG": str(EXAMPLE), "CONVOSTORE_AUTH": "api_keys"})
    policy = config.policy
    assert set(policy) == {"packs", "policies", "tokenizers", "tenants", "compaction", "passthrough"}
    assert set(policy["packs"]["support"]) == {"system", "few_shot", "tools"}
    assert set(policy["policies"]["default"]) == {
        "keep_last_turns", "summary_every_turns", "max_input_tokens", "summariser", "summariser_url", "pack",
    }  # fmt: skip
    assert set(policy["tenants"]["acme"]) == {"api_keys", "api_key_sha256", "quota"}
    assert set(policy["tenants"]["acme"]["quota"]) == {
        "requests_per_minute",
        "stored_bytes",
        "conversations",
        "background_responses",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenants: {acme: {api_key: sk-1}}", "tenants.acme: unknown key 'api_key'; did you mean 'api_keys'?"),
        ("flavour: vanilla", "unknown key 'flavour'"),
        (
            "policies: {default: {keep_last_turns: 0}}",
            "policies.default.keep_last_turns: must be an integer ≥ 1",
        ),
        (
            "policies: {default: {keep_last_turns: true}}",
            "policies.default.keep_last_turns: must be an integer",
        ),
        (
            "policies: {default: {max_input_tokens: '6000'}}",
            "policies.default.max_input_tokens: must be an int",
        ),
        ("policies: {default: {summariser: gpt}}", "policies.default.summariser: must be one of template"),
        ("policies: {default: {summariser: http}}", "policies.default.summariser_url: required when"),
        ("policies: {default: {pack: nope}}", "policies.default.pack: no pack named 'nope'"),
        ("policies: {default: {trim: 3}}", "policies.default: unknown key 'trim'"),
        ("packs: {s: {system: 3}}", "packs.s.system: must be a string"),
        ("packs: {s: {few_shot: [{role: bot, content: hi}]}}", "packs.s.few_shot[0].role: must be one of"),
        ("packs: {s: {few_shot: [{role: user}]}}", "packs.s.few_shot[0]: missing 'content'"),
        ("packs: {s: {tools: [{name: x}]}}", "packs.s.tools[0].type: a tool needs a 'type'"),
        ("packs: [a, b]", "packs: must be a mapping, not a list"),
        ("tokenizers: {gemma: 3}", "tokenizers.gemma: must be a string"),
        ("tenants: {acme: {api_keys: sk-1}}", "tenants.acme.api_keys: must be a list, not a string"),
        ("tenants: {acme: {api_keys: ['']}}", "tenants.acme.api_keys[0]: must not be empty"),
        ("tenants: {acme: {api_key_sha256: [abc]}}", "tenants.acme.api_key_sha256[0]: must be a SHA-256"),
        ("tenants: {acme: {quota: {rpm: 5}}}", "tenants.acme.quota: unknown key 'rpm'"),
        (
            "tenants: {acme: {quota: {stored_bytes: -1}}}",
            "tenants.acme.quota.stored_bytes: must be an integer",
        ),
        ("tenants: {1: {api_keys: [k]}}", "tenants: tenant names must be 1-128 characters"),
        # a tenant's name is part of its keys and records: the characters of X-Tenant-Id, no separators
        ("tenants: {'a:b': {api_keys: [k]}}", "tenants: tenant names must be 1-128 characters"),
        ('tenants: {"acme\\n": {api_keys: [k]}}', "tenants: tenant names must be 1-128 characters"),
        (
            "tenants: {a: {api_keys: [k]}, b: {api_keys: [k]}}",
            "tenants.b.api_keys[0]: the same key as tenant 'a'",
        ),
        ("[1, 2]", "must be a mapping, not a list"),
    ],
)
def test_each_problem_is_named_by_its_path(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        validate_policy(yaml.safe_load(text))
    assert str(err.value).startswith(message)


def test_empty_and_null_sections_are_fine() -> None:
    assert validate_policy(None) == {}
    assert validate_policy(yaml.safe_load("packs:\ntenants: {acme: }\n")) == {
        "packs": None,
        "tenants": {"acme": None},
    }


def test_config_error_is_one_line_naming_the_setting_and_the_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("tenants:\n  acme:\n    api_key: sk-acme-1\n")
    with pytest.raises(ConfigError) as err:
        load_policy(policy)
    message = str(err.value)
    assert message.startswith("CONVOSTORE_CONFIG: tenants.acme: unknown key 'api_key'")
    assert str(policy) in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"^--config \(CONVOSTORE_CONFIG\): tenants.acme"):
        Config.from_env({}, config_path=str(policy))


@pytest.mark.parametrize(
    ("overrides", "env", "start"),
    [
        ({"upstream_api": "grpc"}, {}, "--upstream-api (CONVOSTORE_UPSTREAM_API): "),
        ({}, {"CONVOSTORE_UPSTREAM_API": "grpc"}, "CONVOSTORE_UPSTREAM_API: "),
        ({"upstream_api": "grpc"}, {"CONVOSTORE_UPSTREAM_API": "chat"}, "--upstream-api"),
        ({"listen": "nowhere"}, {}, "--listen (CONVOSTORE_LISTEN): "),
        ({"redis_url": "mysql://x"}, {}, "--redis-url (REDIS_URL): "),
        ({"drain_seconds": "0"}, {}, "--drain-seconds (CONVOSTORE_DRAIN_SECONDS): "),
        ({}, {"CONVOSTORE_DRAIN_SECONDS": "inf"}, "CONVOSTORE_DRAIN_SECONDS: "),
        ({}, {"CONVOSTORE_UPSTREAM_TIMEOUT_SECONDS": "0"}, "CONVOSTORE_UPSTREAM_TIMEOUT_SECONDS: "),
        ({}, {"CONVOSTORE_UPSTREAM_TIMEOUT_SECONDS": "-3"}, "CONVOSTORE_UPSTREAM_TIMEOUT_SECONDS: "),
    ],
)
def test_errors_name_what_the_user_set(overrides: dict[str, Any], env: dict[str, str], start: str) -> None:
    with pytest.raises(ConfigError) as err:
        Config.from_env(env, **overrides)
    assert str(err.value).startswith(start)


def test_drain_seconds_default_and_setting() -> None:
    assert Config.from_env({}).drain_seconds == 30
    assert Config.from_env({"CONVOSTORE_DRAIN_SECONDS": "2.5"}).drain_seconds == 2.5
