"""`convostore webhook` as a real process over TLS: AdmissionReview v1 in, JSONPatch applied to the pod."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import urllib.error
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from tests.fixtures.sidecar_process import CONVOSTORE_BIN
from tests.webhook.conftest import WebhookProcess, make_key_pair
from tests.webhook.reviews import pod, review


def mutate(webhook: WebhookProcess, obj: Any, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    sent = review(obj, **kw)
    status, answer = webhook.post(sent)
    assert status == 200
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == sent["request"]["uid"]
    return answer["response"], sent


def test_an_annotated_pod_is_patched_with_the_configured_sidecar(webhook: WebhookProcess) -> None:
    obj = pod({"convostore.io/inject": "true", "convostore.io/upstream-port": "8001"})
    response, _ = mutate(webhook, obj)
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    result = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))

    engine, sidecar = result["spec"]["containers"]
    assert engine == obj["spec"]["containers"][0]  # the engine container is untouched
    assert sidecar["name"] == "convostore"
    assert sidecar["image"] == "registry.example/convostore:0.1.0" and sidecar["imagePullPolicy"] == "Always"
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["CONVOSTORE_UPSTREAM"]["value"] == "http://127.0.0.1:8001"
    # The flag overrides the file's secret name; the key stays the file's.
    assert env["REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "convostore-redis", "key": "url"}}
    assert env["CONVOSTORE_UPSTREAM_API"]["value"] == "chat"
    assert sidecar["ports"] == [{"name": "convostore", "containerPort": 8080, "protocol": "TCP"}]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/convostore/readyz", "port": "convostore"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/convostore/healthz", "port": "convostore"}
    assert sidecar["resources"]["limits"] == {"memory": "256Mi"}


def test_a_pod_without_annotations_or_containers(webhook: WebhookProcess) -> None:
    response, _ = mutate(webhook, pod(None))
    assert response["allowed"] is True and "patch" not in response
    bare = pod(containers=None)
    response, _ = mutate(webhook, bare)
    result = jsonpatch.apply_patch(bare, json.loads(base64.b64decode(response["patch"])))
    assert [c["name"] for c in result["spec"]["containers"]] == ["convostore"]


def test_an_injected_pod_is_left_alone(webhook: WebhookProcess) -> None:
    first, _ = mutate(webhook, pod())
    injected = jsonpatch.apply_patch(pod(), json.loads(base64.b64decode(first["patch"])))
    again, _ = mutate(webhook, injected)
    assert again["allowed"] is True and "patch" not in again and "patchType" not in again


@pytest.mark.parametrize(
    "body",
    [b"{this is not json", b"", b"null", b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}'],
)
def test_malformed_bodies_get_a_well_formed_refusal(webhook: WebhookProcess, body: bytes) -> None:
    status, answer = webhook.post(body)
    assert status == 200 and answer["kind"] == "AdmissionReview"
    assert answer["response"]["allowed"] is False and answer["response"]["status"]["message"]


def test_a_review_missing_its_pod_or_with_a_bad_port_is_refused(webhook: WebhookProcess) -> None:
    sent = review(pod())
    del sent["request"]["object"]
    status, answer = webhook.post(sent)
    assert status == 200 and answer["response"]["uid"] == sent["request"]["uid"]
    assert (
        answer["response"]["allowed"] is False and "request.object" in answer["response"]["status"]["message"]
    )
    response, _ = mutate(
        webhook, pod({"convostore.io/inject": "true", "convostore.io/upstream-port": "http"})
    )
    assert response["allowed"] is False and "upstream-port" in response["status"]["message"]
    assert webhook.get("/healthz") == (200, {"status": "ok"})  # still serving after all of that


def test_it_speaks_tls_only_with_its_own_certificate(webhook: WebhookProcess, tmp_path: Path) -> None:
    other_ca, _ = make_key_pair(tmp_path, "other")
    with pytest.raises(urllib.error.URLError) as info:
        webhook.get("/healthz", cafile=other_ca)
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)
    assert (
        '"logger": "convostore.webhook"' in webhook.log() or '"logger":"convostore.webhook"' in webhook.log()
    )


def test_a_rotated_key_pair_is_served_without_a_restart(tmp_path: Path) -> None:
    cert, key = make_key_pair(tmp_path)
    process = WebhookProcess(cert, key, "--sidecar-image", "c:1", "--tls-reload-seconds", "0.2")
    try:
        new_cert, new_key = make_key_pair(tmp_path, "rotated")
        # As a Secret volume update does: both files replaced, then the webhook notices on its next check.
        os.replace(new_key, key)
        os.replace(new_cert, cert)
        os.utime(cert, (time.time() + 5, time.time() + 5))
        deadline = time.monotonic() + 10
        while True:
            try:
                assert process.get("/healthz", cafile=cert)[0] == 200
                break
            except urllib.error.URLError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"rotated certificate never served:\n{process.log()}") from None
                time.sleep(0.1)
    finally:
        process.stop()


def test_a_bad_configuration_stops_start_up_with_one_line(tmp_path: Path) -> None:
    cert, key = make_key_pair(tmp_path)
    run = subprocess.run(
        [str(CONVOSTORE_BIN), "webhook", "--tls-cert", str(cert), "--tls-key", str(key)],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("CONVOSTORE_")},
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "convostore webhook: configuration error: --sidecar-image / CONVOSTORE_WEBHOOK_SIDECAR_IMAGE "
        "(or `image` in --config) is required"
    ]
