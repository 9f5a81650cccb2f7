"""The deployment examples parse and name only images, ports and variables that exist.

Kubernetes pods are run through the webhook's own patch builder (sidecar/webhook/patch.py), so "the Service
targets a port the injected container has" is checked against what injection really adds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonpatch
import pytest
import yaml

from sidecar.webhook.patch import (
    CONTAINER_NAME,
    INJECT_ANNOTATION,
    SIDECAR_PORT,
    UPSTREAM_PORT_ANNOTATION,
    InjectionConfig,
    pod_patch,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MANIFESTS = {
    "vllm": EXAMPLES / "vllm" / "deployment.yaml",
    "kserve": EXAMPLES / "kserve" / "inferenceservice.yaml",
    "compose": EXAMPLES / "compose" / "compose.yaml",
}
# Images the examples may name: upstream images that exist, and ours (built from the repository's Dockerfile).
KNOWN_IMAGES = re.compile(
    r"^(vllm/vllm-openai:(latest|v\d+\.\d+\.\d+)|ghcr\.io/ggml-org/llama\.cpp:server|redis:7|convostore:latest)$"
)
OUR_VARIABLES = re.compile(r"\b(CONVOSTORE_[A-Z0-9_]+|REDIS_URL)\b")


def load_all(path: Path) -> list[dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents), path
    return documents


def of_kind(path: Path, kind: str) -> dict[str, Any]:
    [document] = [d for d in load_all(path) if d.get("kind") == kind]
    return document


def sidecar_variables() -> set[str]:
    """The variables the sidecar's configuration reads (`env.get("…")` in sidecar/config.py)."""
    source = (ROOT / "sidecar" / "config.py").read_text()
    names = set(re.findall(r'env\.get\("([A-Z0-9_]+)"\)', source))
    names |= set(re.findall(r'^\s+"[a-z_]+": "((?:CONVOSTORE|REDIS)_[A-Z0-9_]+)",$', source, re.M))
    assert {"CONVOSTORE_UPSTREAM", "REDIS_URL"} <= names, "sidecar/config.py no longer names its variables?"
    return names


def inject(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as the API server stores it after the webhook's patch."""
    operations, warnings = pod_patch(pod, InjectionConfig(image="convostore:latest"))
    assert operations, "the pod is not annotated for injection"
    assert warnings == []  # no engine container declares the sidecar's port
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, operations)
    return patched


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in pod["spec"]["containers"] if c["name"] == name]
    return found


def port_names(pod: dict[str, Any]) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"]
        for c in pod["spec"]["containers"]
        for p in c.get("ports", [])
        if "name" in p
    }


def flag(args: list[str], name: str) -> str:
    """The value of `--name=value` or `--name value` in an argument list."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return args[i + 1]
    raise AssertionError(f"{name} not in {args}")


def check_injected(pod: dict[str, Any], engine: dict[str, Any], service: dict[str, Any]) -> None:
    """The engine port is the upstream-port annotation, and the Service reaches the injected sidecar."""
    annotations = pod["metadata"]["annotations"]
    assert annotations[INJECT_ANNOTATION] == "true"
    upstream_port = int(annotations[UPSTREAM_PORT_ANNOTATION])
    assert upstream_port in [p["containerPort"] for p in engine["ports"]]

    patched = inject(pod)
    sidecar = container(patched, CONTAINER_NAME)
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["CONVOSTORE_UPSTREAM"] == f"http://127.0.0.1:{upstream_port}"
    assert port_names(patched)[CONTAINER_NAME] == SIDECAR_PORT

    selector = service["spec"]["selector"]
    assert selector.items() <= pod["metadata"]["labels"].items(), "the Service selects no engine pod"
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert target in (CONTAINER_NAME, SIDECAR_PORT), f"{target!r} is not the sidecar's port"
        assert (target if isinstance(target, int) else port_names(patched)[target]) == SIDECAR_PORT


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_parses(name: str) -> None:
    load_all(MANIFESTS[name])


def test_examples_name_only_variables_the_sidecar_reads() -> None:
    known = sidecar_variables()
    named = {
        (path.relative_to(ROOT).as_posix(), variable)
        for path in EXAMPLES.rglob("*")
        if path.is_file() and path.suffix in {".yaml", ".yml", ".md", ".py"}
        for variable in OUR_VARIABLES.findall(path.read_text())
    }
    assert {v for _, v in named} >= {"CONVOSTORE_UPSTREAM", "REDIS_URL"}
    assert sorted(n for n in named if n[1] not in known) == []


def test_examples_name_only_known_images() -> None:
    images = {
        c["image"] for c in of_kind(MANIFESTS["vllm"], "Deployment")["spec"]["template"]["spec"]["containers"]
    }
    images |= {s["image"] for s in load_all(MANIFESTS["compose"])[0]["services"].values()}
    assert images and all(KNOWN_IMAGES.match(image) for image in images), images


def test_vllm_deployment_is_served_through_the_injected_sidecar() -> None:
    deployment = of_kind(MANIFESTS["vllm"], "Deployment")
    template = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]}
    [engine] = template["spec"]["containers"]
    assert engine["image"].startswith("vllm/vllm-openai:")
    assert int(flag(engine["args"], "--port")) == int(
        template["metadata"]["annotations"][UPSTREAM_PORT_ANNOTATION]
    )
    check_injected(pod, engine, of_kind(MANIFESTS["vllm"], "Service"))
    # The engine outlives the endpoint update, and the grace period covers its sleep and the sidecar's drain.
    [sleep, seconds] = engine["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep" and template["spec"]["terminationGracePeriodSeconds"] > int(seconds) + 30


def test_kserve_predictor_is_served_through_the_injected_sidecar() -> None:
    isvc = of_kind(MANIFESTS["kserve"], "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] == "huggingface" and flag(model["args"], "--backend") == "vllm"
    # The sidecar calls the engine's /v1/...: KServe's /openai route prefix must be off.
    env = {e["name"]: e.get("value") for e in model["env"]}
    assert env["KSERVE_OPENAI_ROUTE_PREFIX"] == ""
    assert int(flag(model["args"], "--http_port")) == int(predictor["annotations"][UPSTREAM_PORT_ANNOTATION])
    # KServe builds the predictor pod: spec.predictor.annotations/labels on its metadata, the model as the
    # `kserve-container`.
    engine = {"name": "kserve-container", "args": model["args"], "ports": model["ports"]}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"annotations": dict(predictor["annotations"]), "labels": dict(predictor["labels"])},
        "spec": {"containers": [engine]},
    }
    check_injected(pod, engine, of_kind(MANIFESTS["kserve"], "Service"))


def test_compose_references_resolve() -> None:
    [compose] = load_all(MANIFESTS["compose"])
    services = compose["services"]
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith((".", "/")) or source in (compose.get("volumes") or {}), volume

    sidecar = services["convostore"]
    assert (MANIFESTS["compose"].parent / sidecar["build"] / "Dockerfile").is_file()
    env = sidecar["environment"]
    redis_url = urlsplit(env["REDIS_URL"])
    assert redis_url.scheme == "redis" and services[redis_url.hostname]["image"].startswith("redis:")
    assert redis_url.port == 6379
    upstream = urlsplit(env["CONVOSTORE_UPSTREAM"])
    engine = services[upstream.hostname]
    assert int(flag([str(a) for a in engine["command"]], "--port")) == upstream.port
    assert {"engine", "redis"} <= set(sidecar["depends_on"])
    # The sidecar listens on 8080 unless CONVOSTORE_LISTEN says otherwise; the published port is that one.
    listen_port = int(env.get("CONVOSTORE_LISTEN", "0.0.0.0:8080").rsplit(":", 1)[1])
    assert [str(p).rsplit(":", 1)[1] for p in sidecar["ports"]] == [str(listen_port)]
