"""Pure injection logic: an AdmissionReview (v1) in, its AdmissionReview answer with a JSONPatch out."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

INJECT_ANNOTATION = "convostore.io/inject"
UPSTREAM_PORT_ANNOTATION = "convostore.io/upstream-port"
CONTAINER_NAME = "convostore"
SIDECAR_PORT = 8080
DEFAULT_UPSTREAM_PORT = 8000
API_VERSION = "admission.k8s.io/v1"

# Without a securityContext of its own the sidecar would inherit nothing safer than the pod's defaults; these
# hold for any image that does not need root (ours runs as a non-root user).
DEFAULT_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


@dataclass(frozen=True)
class InjectionConfig:
    """What every injected container gets, from the webhook's own configuration (the chart's values)."""

    image: str
    image_pull_policy: str = "IfNotPresent"
    # REDIS_URL comes from this Secret in the pod's own namespace; no name means no REDIS_URL (memory://).
    redis_secret_name: str = ""
    redis_secret_key: str = "redis-url"
    env: tuple[dict[str, Any], ...] = ()
    resources: dict[str, Any] = field(default_factory=dict)
    security_context: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SECURITY_CONTEXT))
    # E.g. a preStop sleep, so the pod serves on while Services drop it (README "Kubernetes").
    lifecycle: dict[str, Any] = field(default_factory=dict)


class MalformedReview(ValueError):
    """The review cannot be answered with a patch; the message says why (it goes back to the API server)."""


def wants_injection(annotations: dict[str, Any]) -> bool:
    value = annotations.get(INJECT_ANNOTATION)
    return isinstance(value, str) and value.strip().lower() == "true"


def upstream_port(annotations: dict[str, Any]) -> int:
    raw = annotations.get(UPSTREAM_PORT_ANNOTATION)
    if raw is None:
        return DEFAULT_UPSTREAM_PORT
    text = str(raw).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise MalformedReview(f"annotation {UPSTREAM_PORT_ANNOTATION}={raw!r} is not a port (1-65535)")
    return int(text)


def sidecar_container(config: InjectionConfig, port: int) -> dict[str, Any]:
    """The `convostore` container added to an annotated pod."""
    env: list[dict[str, Any]] = [
        {"name": "CONVOSTORE_UPSTREAM", "value": f"http://127.0.0.1:{port}"},
        {"name": "CONVOSTORE_LISTEN", "value": f"0.0.0.0:{SIDECAR_PORT}"},
    ]
    if config.redis_secret_name:
        env.append(
            {
                "name": "REDIS_URL",
                "valueFrom": {
                    "secretKeyRef": {"name": config.redis_secret_name, "key": config.redis_secret_key}
                },
            }
        )
    # Configured env overrides ours by name (in place), so an operator can e.g. pin CONVOSTORE_UPSTREAM_API.
    for extra in config.env:
        positions = [i for i, existing in enumerate(env) if existing["name"] == extra["name"]]
        if positions:
            env[positions[0]] = dict(extra)
        else:
            env.append(dict(extra))
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "env": env,
        "ports": [{"name": CONTAINER_NAME, "containerPort": SIDECAR_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/convostore/readyz", "port": CONTAINER_NAME},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/convostore/healthz", "port": CONTAINER_NAME},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
    }
    if config.resources:
        container["resources"] = config.resources
    if config.security_context:
        container["securityContext"] = config.security_context
    if config.lifecycle:
        container["lifecycle"] = config.lifecycle
    return container


def pod_patch(pod: dict[str, Any], config: InjectionConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """The JSONPatch operations for one pod (empty: nothing to do), and warnings for the client."""
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict) or not wants_injection(annotations):
        return [], []
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise MalformedReview("request.object.spec is missing or not an object")
    containers = spec.get("containers")
    if containers is not None and not isinstance(containers, list):
        raise MalformedReview("request.object.spec.containers is not a list")
    containers = containers or []
    if any(isinstance(c, dict) and c.get("name") == CONTAINER_NAME for c in containers):
        return [], []  # injected already (a reinvocation, or written by hand): idempotent
    container = sidecar_container(config, upstream_port(annotations))
    warnings = [
        f"container {c.get('name')!r} also declares port {SIDECAR_PORT}, where the convostore sidecar listens"
        for c in containers
        if isinstance(c, dict)
        and any(isinstance(p, dict) and p.get("containerPort") == SIDECAR_PORT for p in c.get("ports") or [])
    ]
    if "containers" in spec and containers:
        return [{"op": "add", "path": "/spec/containers/-", "value": container}], warnings
    # No list to append to (absent, null or empty): `/-` would fail to apply, so set the whole list.
    return [{"op": "add", "path": "/spec/containers", "value": [container]}], warnings


def _answer(
    uid: str,
    *,
    allowed: bool,
    message: str = "",
    patch: list[dict[str, Any]] | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": 400, "reason": "BadRequest", "message": message}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(patch)).decode("ascii")
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def review_response(review: object, config: InjectionConfig) -> dict[str, Any]:
    """Answer one decoded AdmissionReview; never raises: a malformed review is `allowed: false`."""
    if not isinstance(review, dict):
        return _answer("", allowed=False, message="not an AdmissionReview: the body is not a JSON object")
    request = review.get("request")
    uid = request.get("uid") if isinstance(request, dict) else None
    if not isinstance(request, dict) or not isinstance(uid, str) or not uid:
        return _answer("", allowed=False, message="not an AdmissionReview: request.uid is missing")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        return _answer(uid, allowed=False, message=f"expected an AdmissionReview of {API_VERSION}")
    kind = request.get("kind")
    if isinstance(kind, dict) and (kind.get("group"), kind.get("kind")) != ("", "Pod"):
        return _answer(uid, allowed=True)  # not ours to judge (a wider rule than the chart's)
    if request.get("operation", "CREATE") != "CREATE":
        return _answer(uid, allowed=True)  # a running pod's containers cannot change
    pod = request.get("object")
    if not isinstance(pod, dict):
        return _answer(uid, allowed=False, message="request.object is missing or not an object")
    try:
        patch, warnings = pod_patch(pod, config)
    except MalformedReview as exc:
        return _answer(uid, allowed=False, message=str(exc))
    return _answer(uid, allowed=True, patch=patch, warnings=warnings)


def body_response(body: bytes, config: InjectionConfig) -> dict[str, Any]:
    """Answer a raw request body; one that is not JSON still gets a well-formed AdmissionReview."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _answer("", allowed=False, message=f"request body is not JSON: {exc}")
    return review_response(review, config)
