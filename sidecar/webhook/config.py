"""The webhook's settings: flags over environment over a YAML/JSON file, checked once at start-up.

The file (`--config`, `CONVOSTORE_WEBHOOK_CONFIG`; the chart mounts one from its values) describes the
injected container; every key is optional and an unknown one stops start-up:

    image: convostore:0.1.0
    imagePullPolicy: IfNotPresent
    redisSecret: {name: convostore-redis, key: redis-url}   # REDIS_URL in the pod's namespace
    env: [{name: CONVOSTORE_LOG_LEVEL, value: debug}]       # Kubernetes EnvVar objects
    resources: {requests: {cpu: 100m, memory: 128Mi}}
    securityContext: {allowPrivilegeEscalation: false}
    lifecycle: {preStop: {exec: {command: [sleep, "5"]}}}

`--sidecar-image`, `--redis-secret-name` and `--redis-secret-key` (or `CONVOSTORE_WEBHOOK_SIDECAR_IMAGE`,
`CONVOSTORE_WEBHOOK_REDIS_SECRET_NAME`, `CONVOSTORE_WEBHOOK_REDIS_SECRET_KEY`) override the file's values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError
from .patch import DEFAULT_SECURITY_CONTEXT, InjectionConfig

_FILE_KEYS = ("image", "imagePullPolicy", "redisSecret", "env", "resources", "securityContext", "lifecycle")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True)
class WebhookConfig:
    listen_host: str
    listen_port: int
    tls_cert: str
    tls_key: str
    tls_reload_seconds: float
    log_format: str
    log_level: str
    injection: InjectionConfig

    @classmethod
    def from_env(cls, flags: Mapping[str, str | None], env: Mapping[str, str] | None = None) -> WebhookConfig:
        """`flags` (None = not given) win over `env` (default: os.environ), which wins over the file."""
        source = os.environ if env is None else env

        def setting(flag: str, variable: str, default: str = "") -> str:
            given = flags.get(flag)
            return given if given is not None else source.get(variable, default)

        listen = setting("listen", "CONVOSTORE_WEBHOOK_LISTEN", "0.0.0.0:8443")
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--listen / CONVOSTORE_WEBHOOK_LISTEN={listen!r} is not host:port")
        tls_cert = setting("tls_cert", "CONVOSTORE_WEBHOOK_TLS_CERT")
        tls_key = setting("tls_key", "CONVOSTORE_WEBHOOK_TLS_KEY")
        for name, path in (("--tls-cert / CONVOSTORE_WEBHOOK_TLS_CERT", tls_cert),
                           ("--tls-key / CONVOSTORE_WEBHOOK_TLS_KEY", tls_key)):  # fmt: skip
            if not path:
                raise ConfigError(f"{name} is required (the API server only calls webhooks over HTTPS)")
            if not Path(path).is_file():
                raise ConfigError(f"{name}={path!r}: no such file")
        reload_text = setting("tls_reload_seconds", "CONVOSTORE_WEBHOOK_TLS_RELOAD_SECONDS", "60")
        try:
            reload_seconds = float(reload_text)
        except ValueError:
            reload_seconds = -1.0
        if reload_seconds <= 0:
            raise ConfigError(f"--tls-reload-seconds={reload_text!r} is not a positive number")
        log_format = setting("log_format", "CONVOSTORE_LOG_FORMAT", "json")
        if log_format not in ("json", "text"):
            raise ConfigError(f"--log-format / CONVOSTORE_LOG_FORMAT={log_format!r}: expected json or text")
        file = _load_file(setting("config_path", "CONVOSTORE_WEBHOOK_CONFIG"))
        redis_secret = file.get("redisSecret") or {}
        injection = InjectionConfig(
            image=setting("sidecar_image", "CONVOSTORE_WEBHOOK_SIDECAR_IMAGE", file.get("image") or ""),
            image_pull_policy=file.get("imagePullPolicy") or "IfNotPresent",
            redis_secret_name=setting(
                "redis_secret_name", "CONVOSTORE_WEBHOOK_REDIS_SECRET_NAME", redis_secret.get("name") or ""
            ),
            redis_secret_key=setting(
                "redis_secret_key",
                "CONVOSTORE_WEBHOOK_REDIS_SECRET_KEY",
                redis_secret.get("key") or "redis-url",
            ),
            env=tuple(file.get("env") or ()),
            resources=file.get("resources") or {},
            security_context=file.get("securityContext", DEFAULT_SECURITY_CONTEXT) or {},
            lifecycle=file.get("lifecycle") or {},
        )
        if not injection.image:
            raise ConfigError(
                "--sidecar-image / CONVOSTORE_WEBHOOK_SIDECAR_IMAGE (or `image` in --config) is required"
            )
        if injection.image_pull_policy not in _PULL_POLICIES:
            raise ConfigError(
                f"imagePullPolicy={injection.image_pull_policy!r}: expected one of {_PULL_POLICIES}"
            )
        return cls(
            listen_host=host.strip("[]"),
            listen_port=int(port),
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_reload_seconds=reload_seconds,
            log_format=log_format,
            log_level=setting("log_level", "CONVOSTORE_LOG_LEVEL", "info"),
            injection=injection,
        )


def _load_file(path: str) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--config / CONVOSTORE_WEBHOOK_CONFIG={path!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path!r}: not YAML/JSON: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path!r}: expected a mapping at the top")
    for key in data:
        if key not in _FILE_KEYS:
            raise ConfigError(
                f"--config {path!r}: unknown key {key!r} (expected one of {', '.join(_FILE_KEYS)})"
            )
    for key in ("redisSecret", "resources", "securityContext", "lifecycle"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ConfigError(f"--config {path!r}: {key} must be a mapping")
    for key in ("image", "imagePullPolicy"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ConfigError(f"--config {path!r}: {key} must be a string")
    env = data.get("env") or []
    if not isinstance(env, list):
        raise ConfigError(f"--config {path!r}: env must be a list of {{name, value | valueFrom}}")
    for i, item in enumerate(env):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ConfigError(f"--config {path!r}: env[{i}] needs a name (a Kubernetes EnvVar object)")
    return data
