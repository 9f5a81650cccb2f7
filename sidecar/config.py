"""Configuration: a frozen Config from CONVOSTORE_* variables, CLI flags over them, and the policy file."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .policy import PolicyError, validate_policy
from .redact import mask_userinfo


class ConfigError(ValueError):
    """A setting is wrong; the message names it in one line."""


UPSTREAM_APIS = ("auto", "responses", "chat")
AUTH_MODES = ("none", "api_keys", "trusted_header")
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")

# Each setting's variable; a CLI flag (`--upstream-api` for `upstream_api`) overrides it, and an error names
# whichever of the two the user actually set.
VARIABLES = {
    "upstream": "CONVOSTORE_UPSTREAM",
    "upstream_api": "CONVOSTORE_UPSTREAM_API",
    "listen": "CONVOSTORE_LISTEN",
    "redis_url": "REDIS_URL",
    "ttl_seconds": "CONVOSTORE_TTL_SECONDS",
    "config_path": "CONVOSTORE_CONFIG",
    "auth": "CONVOSTORE_AUTH",
    "upstream_api_key": "CONVOSTORE_UPSTREAM_API_KEY",
    "max_body_bytes": "CONVOSTORE_MAX_BODY_BYTES",
    "log_format": "CONVOSTORE_LOG_FORMAT",
    "log_level": "CONVOSTORE_LOG_LEVEL",
    "upstream_timeout_seconds": "CONVOSTORE_UPSTREAM_TIMEOUT_SECONDS",
    "client_timeout_seconds": "CONVOSTORE_CLIENT_TIMEOUT_SECONDS",
    "redis_wait_replicas": "CONVOSTORE_REDIS_WAIT_REPLICAS",
    "redis_wait_timeout_ms": "CONVOSTORE_REDIS_WAIT_TIMEOUT_MS",
    "drain_seconds": "CONVOSTORE_DRAIN_SECONDS",
    "workers": "CONVOSTORE_WORKERS",
    "ws_idle_seconds": "CONVOSTORE_WS_IDLE_SECONDS",
}
_FLAGS = {"config_path": "--config"}


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
    # On SIGTERM, in-flight requests and streams get this long to finish before streams are cut.
    drain_seconds: float = 30.0
    # Processes sharing the port (SO_REUSEPORT), resolved from `auto` when the configuration is read.
    workers: int = 1
    # A Responses WebSocket with no message and no response running for this long is closed (1000).
    ws_idle_seconds: float = 300.0
    policy: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build from the environment; keyword overrides (CLI flags) win over variables."""
        env = os.environ if env is None else env
        raw: dict[str, Any] = {}
        names: dict[str, str] = {}
        for key, variable in VARIABLES.items():
            if env.get(variable) is not None:
                raw[key], names[key] = env[variable], variable
        for key, value in overrides.items():
            if value is not None:
                flag = _FLAGS.get(key, "--" + key.replace("_", "-"))
                raw[key], names[key] = value, f"{flag} ({VARIABLES[key]})" if key in VARIABLES else flag
        return _validated(cls(), raw, names)

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"


def _validated(config: Config, raw: dict[str, Any], names: Mapping[str, str]) -> Config:
    def name(key: str) -> str:
        return names.get(key, VARIABLES[key])

    changes: dict[str, Any] = {}
    if "upstream" in raw:
        changes["upstream"] = _http_url(raw["upstream"], name("upstream")).rstrip("/")
    if "upstream_api" in raw:
        changes["upstream_api"] = _choice(raw["upstream_api"], UPSTREAM_APIS, name("upstream_api"))
    if "listen" in raw:
        changes["listen_host"], changes["listen_port"] = _host_port(raw["listen"], name("listen"))
    if "redis_url" in raw:
        changes["redis_url"] = _redis_url(raw["redis_url"], name("redis_url"))
    if "ttl_seconds" in raw:
        changes["ttl_seconds"] = _positive_int(raw["ttl_seconds"], name("ttl_seconds"))
    if "auth" in raw:
        changes["auth"] = _choice(raw["auth"], AUTH_MODES, name("auth"))
    if "upstream_api_key" in raw:
        changes["upstream_api_key"] = str(raw["upstream_api_key"]) or None
    if "max_body_bytes" in raw:
        changes["max_body_bytes"] = _positive_int(raw["max_body_bytes"], name("max_body_bytes"))
    if "log_format" in raw:
        changes["log_format"] = _choice(raw["log_format"], LOG_FORMATS, name("log_format"))
    if "log_level" in raw:
        changes["log_level"] = _choice(str(raw["log_level"]).lower(), LOG_LEVELS, name("log_level"))
    for key in ("upstream_timeout_seconds", "client_timeout_seconds", "drain_seconds", "ws_idle_seconds"):
        if key in raw:
            changes[key] = _seconds(raw[key], name(key))
    if "redis_wait_replicas" in raw:
        changes["redis_wait_replicas"] = _count(raw["redis_wait_replicas"], name("redis_wait_replicas"))
    if "redis_wait_timeout_ms" in raw:
        changes["redis_wait_timeout_ms"] = _positive_int(
            raw["redis_wait_timeout_ms"], name("redis_wait_timeout_ms")
        )
    if "config_path" in raw:
        changes["config_path"] = str(raw["config_path"])
        changes["policy"] = load_policy(Path(changes["config_path"]), name("config_path"))
    config = replace(config, **changes)
    config = replace(config, workers=_workers(raw.get("workers", "auto"), config.redis_url, name("workers")))
    if config.auth == "api_keys" and not config.policy.get("tenants"):
        raise ConfigError(
            f"{name('auth')}: api_keys needs tenants; the policy file ({name('config_path')}) has none"
        )
    return config


def _workers(value: Any, redis_url: str, name: str) -> int:
    memory = redis_url.startswith("memory://")
    if str(value).strip().lower() == "auto":
        return 1 if memory else available_cpus()
    try:
        workers = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: not a number of processes or auto: {value!r}") from None
    if workers <= 0:
        raise ConfigError(f"{name}: must be a positive number of processes or auto, got {value!r}")
    if workers > 1 and memory:
        # Each worker would hold a store of its own: an id minted by one would be unknown to the others.
        raise ConfigError(
            f"{name}: {workers} workers need a shared store; memory:// keeps its state in one process"
            " (use 1, or a redis:// REDIS_URL)"
        )
    return workers


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity, capped by the container's CPU quota (cgroup v2
    `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), rounded down, at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, int(quota))
    return max(1, cpus)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs allowed by the CFS quota, or None when there is none (or it cannot be read)."""
    try:
        quota, _, period = (root / "cpu.max").read_text().partition(" ")  # v2: "max 100000", "200000 100000"
    except OSError:
        try:  # v1: quota -1 means none
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text()
        except OSError:
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no limit
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def load_policy(path: Path, name: str = "CONVOSTORE_CONFIG") -> dict[str, Any]:
    """Read the YAML policy file and check all of it against its schema (docs/api.md §9)."""
    import yaml  # only needed when a policy file is used

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: {path} is not valid YAML: {exc}".splitlines()[0]) from None
    try:
        return validate_policy(data)
    except PolicyError as exc:
        where = f"{exc.where}: " if exc.where else ""
        raise ConfigError(f"{name}: {where}{exc.problem} (in {path})".splitlines()[0]) from None


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
    if not 0 < seconds < math.inf:
        raise ConfigError(f"{name}: must be a positive number of seconds, got {value!r}")
    return seconds


def _http_url(value: Any, name: str) -> str:
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}: not an http(s) URL: {mask_userinfo(repr(value))}")
    return str(value)


def _redis_url(value: Any, name: str) -> str:
    scheme = urlsplit(str(value)).scheme
    if scheme not in ("memory", "redis", "rediss", "unix"):
        raise ConfigError(
            f"{name}: scheme must be memory, redis, rediss or unix: {mask_userinfo(repr(value))}"
        )
    return str(value)


def _host_port(value: Any, name: str) -> tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}: expected host:port, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
