"""The pure patch builder and the webhook's settings, without a server."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from sidecar.config import ConfigError
from sidecar.webhook.config import WebhookConfig
from sidecar.webhook.patch import InjectionConfig, body_response, review_response
from tests.webhook.reviews import pod, review

CONFIG = InjectionConfig(
    image="registry.example/convostore:0.1.0",
    redis_secret_name="convostore-redis",
    redis_secret_key="redis-url",
    env=({"name": "CONVOSTORE_LOG_LEVEL", "value": "debug"},),
    resources={"requests": {"cpu": "100m", "memory": "128Mi"}},
)


def answer_of(obj: Any, config: InjectionConfig = CONFIG, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    sent = review(obj, **kw)
    answer = review_response(sent, config)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == sent["request"]["uid"]
    return answer["response"], sent


def patched(obj: dict[str, Any], config: InjectionConfig = CONFIG) -> dict[str, Any]:
    response, _ = answer_of(obj, config)
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(obj, patch)
    return result


def sidecar_of(result: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in result["spec"]["containers"] if c["name"] == "convostore"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_an_annotated_pod_gets_the_sidecar_appended() -> None:
    result = patched(pod({"convostore.io/inject": "true", "convostore.io/upstream-port": "9000"}))
    assert [c["name"] for c in result["spec"]["containers"]] == ["vllm", "convostore"]
    container = sidecar_of(result)
    assert container["image"] == CONFIG.image
    env = env_of(container)
    assert env["CONVOSTORE_UPSTREAM"] == "http://127.0.0.1:9000"
    assert env["REDIS_URL"] == {"secretKeyRef": {"name": "convostore-redis", "key": "redis-url"}}
    assert env["CONVOSTORE_LOG_LEVEL"] == "debug"
    assert container["ports"] == [{"name": "convostore", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/convostore/readyz", "port": "convostore"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/convostore/healthz", "port": "convostore"}
    assert container["resources"] == CONFIG.resources
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_upstream_port_defaults_to_8000_and_the_patch_appends() -> None:
    response, _ = answer_of(pod())
    [op] = json.loads(base64.b64decode(response["patch"]))
    assert op["op"] == "add" and op["path"] == "/spec/containers/-"
    assert env_of(op["value"])["CONVOSTORE_UPSTREAM"] == "http://127.0.0.1:8000"


@pytest.mark.parametrize("containers", [None, [], "null"])
def test_a_pod_without_containers_gets_a_list_with_the_sidecar(containers: Any) -> None:
    obj = pod(containers=None if containers == "null" else containers)
    if containers == "null":
        obj["spec"]["containers"] = None
    result = patched(obj)
    assert [c["name"] for c in result["spec"]["containers"]] == ["convostore"]


@pytest.mark.parametrize(
    "annotations", [None, {}, {"convostore.io/inject": "false"}, {"other.io/inject": "true"}]
)
def test_a_pod_not_asking_is_allowed_untouched(annotations: dict[str, str] | None) -> None:
    response, _ = answer_of(pod(annotations))
    assert response["allowed"] is True and "patch" not in response and "patchType" not in response


def test_a_pod_without_metadata_is_allowed_untouched() -> None:
    response, _ = answer_of({"spec": {"containers": []}})
    assert response["allowed"] is True and "patch" not in response


def test_injection_is_idempotent() -> None:
    once = patched(pod())
    response, _ = answer_of(once)
    assert response["allowed"] is True and "patch" not in response
    assert len(once["spec"]["containers"]) == 2


def test_a_configured_lifecycle_is_the_sidecars_and_none_by_default() -> None:
    assert "lifecycle" not in sidecar_of(patched(pod()))
    hooks = {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    config = InjectionConfig(image="c:1", lifecycle=hooks)
    assert sidecar_of(patched(pod(), config))["lifecycle"] == hooks


def test_configured_env_overrides_ours_by_name() -> None:
    config = InjectionConfig(image="c:1", env=({"name": "CONVOSTORE_UPSTREAM", "value": "http://x:1"},))
    container = sidecar_of(patched(pod(), config))
    names = [e["name"] for e in container["env"]]
    assert names.count("CONVOSTORE_UPSTREAM") == 1 and names[0] == "CONVOSTORE_UPSTREAM"
    assert env_of(container)["CONVOSTORE_UPSTREAM"] == "http://x:1"
    assert "REDIS_URL" not in names  # no secret configured: the sidecar falls back to memory://


def test_a_container_on_port_8080_is_a_warning() -> None:
    obj = pod(containers=[{"name": "app", "image": "a", "ports": [{"containerPort": 8080}]}])
    response, _ = answer_of(obj)
    assert response["allowed"] is True and "8080" in response["warnings"][0]


@pytest.mark.parametrize("port", ["http", "0", "70000", "-1", ""])
def test_a_bad_upstream_port_annotation_is_refused_naming_it(port: str) -> None:
    response, _ = answer_of(pod({"convostore.io/inject": "true", "convostore.io/upstream-port": port}))
    assert response["allowed"] is False
    assert "convostore.io/upstream-port" in response["status"]["message"]
    assert "patch" not in response


def test_updates_and_other_kinds_are_allowed_untouched() -> None:
    response, _ = answer_of(pod(), operation="UPDATE")
    assert response["allowed"] is True and "patch" not in response
    sent = review(pod())
    sent["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert "patch" not in review_response(sent, CONFIG)["response"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request.uid"),
        (b'{"request": {"uid": 7}}', "request.uid"),
    ],
)
def test_a_body_without_a_uid_gets_a_well_formed_refusal(body: bytes, reason: str) -> None:
    answer = body_response(body, CONFIG)
    assert answer["kind"] == "AdmissionReview" and answer["response"]["uid"] == ""
    assert answer["response"]["allowed"] is False and reason in answer["response"]["status"]["message"]


def test_a_review_with_a_uid_but_no_pod_is_refused_with_its_uid() -> None:
    sent = review(None, uid="u-1")
    del sent["request"]["object"]
    answer = review_response(sent, CONFIG)["response"]
    assert answer == {
        "uid": "u-1",
        "allowed": False,
        "status": {"code": 400, "reason": "BadRequest", "message": answer["status"]["message"]},
    }
    assert "request.object" in answer["status"]["message"]
    spec_less = review_response(
        review({"metadata": {"annotations": {"convostore.io/inject": "true"}}}), CONFIG
    )
    assert spec_less["response"]["allowed"] is False and "spec" in spec_less["response"]["status"]["message"]
    wrong_version = review(pod())
    wrong_version["apiVersion"] = "admission.k8s.io/v1beta1"
    assert review_response(wrong_version, CONFIG)["response"]["allowed"] is False


# ---- settings


@pytest.fixture
def key_pair(tmp_path: Path) -> dict[str, str | None]:
    (tmp_path / "tls.crt").write_text("cert")
    (tmp_path / "tls.key").write_text("key")
    return {"tls_cert": str(tmp_path / "tls.crt"), "tls_key": str(tmp_path / "tls.key")}


def test_settings_come_from_flags_over_env_over_the_file(
    tmp_path: Path, key_pair: dict[str, str | None]
) -> None:
    file = tmp_path / "webhook.yaml"
    file.write_text(
        "image: from-file:1\nredisSecret: {name: file-secret, key: url}\n"
        "env: [{name: A, value: b}]\nresources: {limits: {memory: 256Mi}}\n"
        "lifecycle: {preStop: {exec: {command: [sleep, '5']}}}\n"
    )
    config = WebhookConfig.from_env(
        {
            **key_pair,
            "config_path": str(file),
            "redis_secret_name": "flag-secret",
            "listen": "127.0.0.1:9443",
        },
        env={"CONVOSTORE_WEBHOOK_SIDECAR_IMAGE": "from-env:2"},
    )
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9443)
    injection = config.injection
    assert injection.image == "from-env:2"
    assert (injection.redis_secret_name, injection.redis_secret_key) == ("flag-secret", "url")
    assert (
        injection.env == ({"name": "A", "value": "b"},) and injection.resources["limits"]["memory"] == "256Mi"
    )
    assert injection.lifecycle == {"preStop": {"exec": {"command": ["sleep", "5"]}}}


@pytest.mark.parametrize(
    ("flags", "env", "file", "named"),
    [
        ({}, {}, None, "--sidecar-image"),
        ({"tls_cert": None}, {"CONVOSTORE_WEBHOOK_SIDECAR_IMAGE": "i"}, None, "--tls-cert"),
        ({"tls_key": "/nonexistent"}, {"CONVOSTORE_WEBHOOK_SIDECAR_IMAGE": "i"}, None, "--tls-key"),
        ({"listen": "8443"}, {"CONVOSTORE_WEBHOOK_SIDECAR_IMAGE": "i"}, None, "--listen"),
        ({}, {}, "image: i\nimagePull: Always\n", "imagePull"),
        ({}, {}, "image: i\nenv: [{value: x}]\n", "env[0]"),
        ({}, {}, "image: i\nresources: [1]\n", "resources"),
        ({}, {}, "image: i\nlifecycle: sleep 5\n", "lifecycle"),
        ({}, {}, "[a, b]\n", "mapping"),
        ({}, {}, "image: [\n", "not YAML"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_it(
    tmp_path: Path,
    key_pair: dict[str, str | None],
    flags: dict[str, str | None],
    env: dict[str, str],
    file: str | None,
    named: str,
) -> None:
    given = {**key_pair, **flags}
    if file is not None:
        (tmp_path / "webhook.yaml").write_text(file)
        given["config_path"] = str(tmp_path / "webhook.yaml")
    with pytest.raises(ConfigError, match=named.replace("[", r"\[")):
        WebhookConfig.from_env(given, env=env)
