"""AdmissionReview v1 requests as the API server sends them, for the webhook tests."""

from __future__ import annotations

import copy
import uuid
from typing import Any

ENGINE_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "generateName": "vllm-7d9f8-",
        "namespace": "models",
        "labels": {"app": "vllm"},
        "annotations": {"convostore.io/inject": "true"},
    },
    "spec": {
        "containers": [
            {
                "name": "vllm",
                "image": "vllm/vllm-openai:v0.8.0",
                "ports": [{"name": "http", "containerPort": 8000}],
            }
        ]
    },
}


def pod(annotations: Any = ..., containers: Any = ..., **spec: Any) -> dict[str, Any]:
    """The engine pod (annotated for injection); annotations or containers None: the key is absent."""
    result = copy.deepcopy(ENGINE_POD)
    if annotations is None:
        del result["metadata"]["annotations"]
    elif annotations is not ...:
        result["metadata"]["annotations"] = annotations
    if containers is not ...:
        if containers is None:
            del result["spec"]["containers"]
        else:
            result["spec"]["containers"] = containers
    result["spec"].update(spec)
    return result


def review(obj: Any, *, operation: str = "CREATE", uid: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "models",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
