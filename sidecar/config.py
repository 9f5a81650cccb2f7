"""Configuration: a frozen Config from CONVOSTORE_* variables, CLI flags over them, and the policy file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .redact import mask_userinfo


class ConfigError(ValueError):
    """A setting is wrong; the message names it in one line."""


UPSTREAM_APIS = ("auto", "responses", "chat")
AUTH_MODES = ("none", "api_keys", "trusted_header")
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")
POLICY_KEYS = frozenset({"packs", "policies", "tokenizers", "tenants"})


@dataclass(frozen=True, slots=True)
class Config:
    upstream: str = "http://127.0.0.1:8000"
    upstream_api: str = "auto"
    listen_host: str = "0.0.0.0"
    listen_port: int = 8080
    redis_url: str = "memory://"
    ttl_seconds: int = 2_592_000
    config_path: str | None = None
    auth: str = "none"
    upstream_api_key: str | None = None
    max_body_bytes: int = 8_388_608
    log_format: str = "json"
    log_level: str = "info"
    upstream_timeout_seconds: float = 600.0
    # A client gets this long to send a request's headers (and to send the next one on a kept-alive
    # connection) and then again its body: slow clients must not hold sockets forever.
    client_timeout_seconds: float = 60.0
    # A stored turn is acknowledged once this many replicas have it (Redis WAIT), or after the timeout.
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 100
    policy: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build from the environment; keyword overrides (CLI flags) win over variables."""
        env = os.environ if env is None else env
        raw: dict[str, Any] = {
            "upstream": env.get("CONVOSTORE_UPSTREAM"),
            "upstream_api": env.get("CONVOSTORE_UPSTREAM_API"),
            "listen": env.get("CONVOSTORE_LISTEN"),
            "redis_url": env.get("REDIS_URL"),
            "ttl_seconds": env.get("CONVOSTORE_TTL_SECONDS"),
            "config_path": env.get("CONVOSTORE_CONFIG"),
            "auth": env.get("CONVOSTORE_AUTH"),
            "upstream_api_key": env.get("CONVOSTORE_UPSTREAM_API_KEY"),
            "max_body_bytes": env.get("CONVOSTORE_MAX_BODY_BYTES"),
            "log_format": env.get("CONVOSTORE_LOG_FORMAT"),
            "log_level": env.get("CONVOSTORE_LOG_LEVEL"),
            "upstream_timeout_seconds": env.get("CONVOSTORE_UPSTREAM_TIMEOUT_SECONDS"),
            "client_timeout_seconds": env.get("CONVOSTORE_CLIENT_TIMEOUT_SECONDS"),
            "redis_wait_replicas": env.get("CONVOSTORE_REDIS_WAIT_REPLICAS"),
            "redis_wait_timeout_ms": env.get("CONVOSTORE_REDIS_WAIT_TIMEOUT_MS"),
        }
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return _validated(cls(), {k: v for k, v in raw.items() if v is not None})

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"


def _validated(config: Config, raw: dict[str, Any]) -> Config:
    changes: dict[str, Any] = {}
    if "upstream" in raw:
        changes["upstream"] = _http_url(raw["upstream"], "CONVOSTORE_UPSTREAM").rstrip("/")
    if "upstream_api" in raw:
        changes["upstream_api"] = _choice(raw["upstream_api"], UPSTREAM_APIS, "CONVOSTORE_UPSTREAM_API")
    if "listen" in raw:
        changes["listen_host"], changes["listen_port"] = _host_port(raw["listen"])
    if "redis_url" in raw:
        changes["redis_url"] = _redis_url(raw["redis_url"])
    if "ttl_seconds" in raw:
        changes["ttl_seconds"] = _positive_int(raw["ttl_seconds"], "CONVOSTORE_TTL_SECONDS")
    if "auth" in raw:
        changes["auth"] = _choice(raw["auth"], AUTH_MODES, "CONVOSTORE_AUTH")
    if "upstream_api_key" in raw:
        changes["upstream_api_key"] = str(raw["upstream_api_key"]) or None
    if "max_body_bytes" in raw:
        changes["max_body_bytes"] = _positive_int(raw["max_body_bytes"], "CONVOSTORE_MAX_BODY_BYTES")
    if "log_format" in raw:
        changes["log_format"] = _choice(raw["log_format"], LOG_FORMATS, "CONVOSTORE_LOG_FORMAT")
    if "log_level" in raw:
        changes["log_level"] = _choice(str(raw["log_level"]).lower(), LOG_LEVELS, "CONVOSTORE_LOG_LEVEL")
    if "upstream_timeout_seconds" in raw:
        changes["upstream_timeout_seconds"] = _seconds(
            raw["upstream_timeout_seconds"], "CONVOSTORE_UPSTREAM_TIMEOUT_SECONDS"
        )
    if "client_timeout_seconds" in raw:
        changes["client_timeout_seconds"] = _seconds(
            raw["client_timeout_seconds"], "CONVOSTORE_CLIENT_TIMEOUT_SECONDS"
        )
    if "redis_wait_replicas" in raw:
        changes["redis_wait_replicas"] = _count(raw["redis_wait_replicas"], "CONVOSTORE_REDIS_WAIT_REPLICAS")
    if "redis_wait_timeout_ms" in raw:
        changes["redis_wait_timeout_ms"] = _positive_int(
            raw["redis_wait_timeout_ms"], "CONVOSTORE_REDIS_WAIT_TIMEOUT_MS"
        )
    if "config_path" in raw:
        changes["config_path"] = str(raw["config_path"])
        changes["policy"] = load_policy(Path(changes["config_path"]))
    config = replace(config, **changes)
    if config.auth == "api_keys" and not config.policy.get("tenants"):
        raise ConfigError("CONVOSTORE_AUTH=api_keys: the policy file (CONVOSTORE_CONFIG) defines no tenants")
    return config


def load_policy(path: Path) -> dict[str, Any]:
    """Read and check the YAML policy file (CONTRACT §9)."""
    import yaml  # only needed when a policy file is used

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"CONVOSTORE_CONFIG: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"CONVOSTORE_CONFIG: {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"CONVOSTORE_CONFIG: {path} must hold a mapping at the top level")
    unknown = sorted(set(data) - POLICY_KEYS)
    if unknown:
        raise ConfigError(f"CONVOSTORE_CONFIG: unknown key '{unknown[0]}' in {path}")
    for key in POLICY_KEYS:
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"CONVOSTORE_CONFIG: '{key}' must be a mapping")
    return data


def _choice(value: Any, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: not an integer: {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{name}: must be positive, got {number}")
    return number


def _count(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: not an integer: {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name}: must be 0 or more, got {number}")
    return number


def _seconds(value: Any, name: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: not a number: {value!r}") from None
    if not seconds > 0:
        raise ConfigError(f"{name}: must be positive, got {seconds}")
    return seconds


def _http_url(value: Any, name: str) -> str:
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}: not an http(s) URL: {mask_userinfo(repr(value))}")
    return str(value)


def _redis_url(value: Any) -> str:
    scheme = urlsplit(str(value)).scheme
    if scheme not in ("memory", "redis", "rediss", "unix"):
        raise ConfigError(
            f"REDIS_URL: scheme must be memory, redis, rediss or unix: {mask_userinfo(repr(value))}"
        )
    return str(value)


def _host_port(value: Any) -> tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"CONVOSTORE_LISTEN: expected host:port, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
