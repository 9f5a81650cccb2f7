"""helm/convostore linted strictly and rendered by the real Helm library: each variant keeps its promises."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from sidecar.webhook.config import WebhookConfig
from tests.helm.chart import CHART, NAMESPACE, container, env, lint, render

WEBHOOK = {"webhook": {"enabled": True}}
CERT_MANAGER = {"webhook": {"enabled": True, "certManager": {"enabled": True}}}
EXTERNAL_REDIS = {"redis": {"url": "redis://redis.data.svc:6379/0"}, "gateway": {"replicaCount": 3}}
INTERNAL_REDIS = {"redis": {"internal": {"enabled": True}}}
EVERYTHING = {
    "redis": {"existingSecret": "shared-redis", "existingSecretKey": "url"},
    "gateway": {
        "autoscaling": {"enabled": True},
        "policy": {"policies": {"default": {"keep_last_turns": 8}}},
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "webhook": {
        "enabled": True,
        "failurePolicy": "Fail",
        "objectSelector": {"matchLabels": {"inject": "yes"}},
    },
}
VARIANTS = {
    "default": None,
    "injection": WEBHOOK,
    "cert-manager": CERT_MANAGER,
    "external-redis": EXTERNAL_REDIS,
    "internal-redis": INTERNAL_REDIS,
    "everything": EVERYTHING,
}


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_the_chart_lints_strictly_and_renders_labelled_yaml(values: dict[str, Any] | None) -> None:
    assert lint(values) == []
    manifests = render(values)
    for doc in manifests.docs:
        labels = doc["metadata"]["labels"]
        assert (
            labels["app.kubernetes.io/instance"] == "demo"
            and labels["app.kubernetes.io/name"] == "convostore"
        )
        if doc["kind"] != "MutatingWebhookConfiguration":  # cluster-scoped
            assert doc["metadata"]["namespace"] == NAMESPACE
    names = [(d["kind"], d["metadata"]["name"]) for d in manifests.docs]
    assert len(names) == len(set(names)), "two resources of one kind share a name"


def test_default_values_give_a_gateway_with_probes_a_pdb_and_the_dashboard() -> None:
    manifests = render()
    assert manifests.kinds() == {
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "ConfigMap",
    }
    deployment = manifests.one("Deployment", "gateway")
    sidecar = container(deployment)
    assert sidecar["image"] == "convostore:0.1.0"
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/convostore/readyz", "port": "http"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/convostore/healthz", "port": "http"}
    assert sidecar["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    variables = env(sidecar)
    assert variables["CONVOSTORE_UPSTREAM"] == "http://vllm:8000"
    assert variables["CONVOSTORE_LISTEN"] == "0.0.0.0:8080"
    assert variables["REDIS_URL"] == "memory://"  # no Redis configured: one replica, said in NOTES
    assert deployment["spec"]["replicas"] == 1 and "memory://" in manifests.notes
    pod = deployment["spec"]["template"]["spec"]
    # Serving on through the preStop sleep while endpoints update, then the drain, within the grace period.
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert pod["terminationGracePeriodSeconds"] > 5 + int(variables["CONVOSTORE_DRAIN_SECONDS"])
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False

    service = manifests.one("Service", "gateway")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    pdb = manifests.one("PodDisruptionBudget", "gateway")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert "ServiceMonitor" not in manifests.kinds() and "HorizontalPodAutoscaler" not in manifests.kinds()

    dashboard = manifests.one("ConfigMap", "dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "convostore.json").read_text())
    assert json.loads(dashboard["data"]["convostore.json"]) == shipped


def test_the_pre_stop_sleep_can_be_turned_off_and_the_grace_period_follows_it() -> None:
    values = {"gateway": {"preStopSleepSeconds": 0, "drainSeconds": 10}}
    deployment = render(values).one("Deployment", "gateway")
    assert "lifecycle" not in container(deployment)
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 10 + 15
    deployment = render({"gateway": {"preStopSleepSeconds": 20}}).one("Deployment", "gateway")
    assert container(deployment)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "20"]
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 20 + 30 + 15


def test_external_redis_url_goes_through_a_chart_secret() -> None:
    manifests = render(EXTERNAL_REDIS)
    [secret] = manifests.all("Secret")
    assert secret["stringData"] == {"redis-url": "redis://redis.data.svc:6379/0"}
    deployment = manifests.one("Deployment", "gateway")
    assert env(container(deployment))["REDIS_URL"] == {
        "secretKeyRef": {"name": secret["metadata"]["name"], "key": "redis-url"}
    }
    assert deployment["spec"]["replicas"] == 3
    assert "StatefulSet" not in manifests.kinds()


def test_the_injected_containers_lifecycle_reaches_the_webhooks_file() -> None:
    hooks = {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    manifests = render({"webhook": {"enabled": True, "sidecar": {"lifecycle": hooks}}})
    config = yaml.safe_load(manifests.one("ConfigMap", "webhook")["data"]["webhook.yaml"])
    assert config["lifecycle"] == hooks


def test_an_existing_secret_is_used_as_is() -> None:
    manifests = render(EVERYTHING)
    assert not [s for s in manifests.all("Secret") if s["metadata"]["name"] == "shared-redis"]
    deployment = manifests.one("Deployment", "gateway")
    assert env(container(deployment))["REDIS_URL"] == {"secretKeyRef": {"name": "shared-redis", "key": "url"}}
    config = yaml.safe_load(manifests.one("ConfigMap", "webhook")["data"]["webhook.yaml"])
    assert config["redisSecret"] == {"name": "shared-redis", "key": "url"}  # the injected sidecar's too


def test_in_chart_redis_is_a_statefulset_with_aof_and_a_volume() -> None:
    manifests = render(INTERNAL_REDIS)
    redis = manifests.one("StatefulSet", "redis")
    args = container(redis)["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    [claim] = redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert container(redis)["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    service = manifests.one("Service", "redis")
    assert service["spec"]["ports"][0]["port"] == 6379
    assert redis["spec"]["serviceName"] == service["metadata"]["name"]

    secret = manifests.one("Secret", "redis")
    url = secret["stringData"]["redis-url"]
    assert url == f"redis://{service['metadata']['name']}.{NAMESPACE}.svc:6379/0"
    ref = env(container(manifests.one("Deployment", "gateway")))["REDIS_URL"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "redis-url"}


def _webhook_parts(manifests: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    return (
        manifests.one("MutatingWebhookConfiguration"),
        manifests.one("Service", "webhook"),
        manifests.one("Deployment", "webhook"),
        manifests.one("ConfigMap", "webhook"),
    )


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _mounted_path(pod: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume that `path` lives in, for the webhook container."""
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    volume: dict[str, Any] = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return volume


def test_injection_wires_the_webhook_configuration_service_and_deployment(tmp_path: Path) -> None:
    manifests = render(WEBHOOK)
    config, service, deployment, configmap = _webhook_parts(manifests)
    [hook] = config["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1"] and hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == "Ignore"
    assert hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    client = hook["clientConfig"]["service"]
    assert client == {
        "name": service["metadata"]["name"],
        "namespace": NAMESPACE,
        "path": "/mutate",
        "port": 443,
    }

    # Service port 443 -> targetPort == the container's port == the port `convostore webhook` listens on.
    [port] = service["spec"]["ports"]
    assert port["port"] == 443
    webhook = container(deployment)
    [container_port] = webhook["ports"]
    assert port["targetPort"] == container_port["containerPort"] == 8443
    assert webhook["command"] == ["convostore"] and webhook["args"][0] == "webhook"
    assert _arg(webhook["args"], "--listen") == f"0.0.0.0:{container_port['containerPort']}"
    assert webhook["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()

    # The key pair and the config file are where the arguments say, from the resources the chart makes.
    pod = deployment["spec"]["template"]["spec"]
    tls_volume = _mounted_path(pod, _arg(webhook["args"], "--tls-cert"))
    assert tls_volume is _mounted_path(pod, _arg(webhook["args"], "--tls-key"))
    tls = manifests.named("Secret", tls_volume["secret"]["secretName"])
    assert tls["type"] == "kubernetes.io/tls" and _arg(webhook["args"], "--tls-cert").endswith("/tls.crt")
    config_volume = _mounted_path(pod, _arg(webhook["args"], "--config"))
    assert config_volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert Path(_arg(webhook["args"], "--config")).name in configmap["data"]

    # The config file is one the real `convostore webhook` accepts, describing the injected container.
    (tmp_path / "webhook.yaml").write_text(configmap["data"]["webhook.yaml"])
    (tmp_path / "tls.crt").write_text("x")
    (tmp_path / "tls.key").write_text("x")
    settings = WebhookConfig.from_env(
        {
            "config_path": str(tmp_path / "webhook.yaml"),
            "tls_cert": str(tmp_path / "tls.crt"),
            "tls_key": str(tmp_path / "tls.key"),
        },
        env={},
    )
    assert settings.injection.image == "convostore:0.1.0"
    assert settings.injection.redis_secret_name == ""  # default values: no Redis, the sidecar uses memory://
    assert settings.injection.resources["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert settings.injection.lifecycle == {}  # a preStop sleep is the operator's choice (values.yaml)

    # The webhook's own pods never go through it (no deadlock under failurePolicy: Fail).
    assert {"key": "convostore.io/webhook", "operator": "DoesNotExist"} in hook["objectSelector"][
        "matchExpressions"
    ]
    assert deployment["spec"]["template"]["metadata"]["labels"]["convostore.io/webhook"] == "true"
    assert "convostore.io/inject" in manifests.notes


def test_generated_tls_gives_a_ca_bundle_that_signed_the_served_certificate(tmp_path: Path) -> None:
    manifests = render(WEBHOOK)
    config, service, _, _ = _webhook_parts(manifests)
    [hook] = config["webhooks"]
    ca_bundle = hook["clientConfig"]["caBundle"]
    assert ca_bundle
    tls = manifests.one("Secret", "webhook")
    assert tls["data"]["ca.crt"] == ca_bundle
    assert "cert-manager.io/inject-ca-from" not in config["metadata"].get("annotations", {})
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (tmp_path / name).write_bytes(base64.b64decode(tls["data"][name]))
    assert b"BEGIN CERTIFICATE" in (tmp_path / "ca.crt").read_bytes()
    # The API server calls https://<service>.<namespace>.svc and checks the certificate against caBundle.
    host = f"{service['metadata']['name']}.{NAMESPACE}.svc"
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "ca.crt"),
            "-verify_hostname",
            host,
            str(tmp_path / "tls.crt"),
        ],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    modulus = [
        subprocess.run(
            ["openssl", kind, "-noout", "-modulus", "-in", str(tmp_path / file)],
            capture_output=True,
            check=True,
        ).stdout
        for kind, file in (("x509", "tls.crt"), ("rsa", "tls.key"))
    ]
    assert modulus[0] == modulus[1]  # the key is the certificate's


def test_cert_manager_issues_the_certificate_and_injects_the_ca() -> None:
    manifests = render(CERT_MANAGER)
    config, service, deployment, _ = _webhook_parts(manifests)
    certificate = manifests.one("Certificate", "webhook")
    annotation = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert annotation == f"{NAMESPACE}/{certificate['metadata']['name']}"
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    assert not manifests.all("Secret")  # cert-manager writes it
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert f"{service['metadata']['name']}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    issuer = manifests.one("Issuer", "webhook")
    assert issuer["spec"] == {"selfSigned": {}}
    assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]

    own = render(
        {
            "webhook": {
                "enabled": True,
                "certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
            }
        }
    )
    assert "Issuer" not in own.kinds()
    assert own.one("Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


def test_selectors_policy_autoscaling_and_service_monitor_follow_the_values() -> None:
    manifests = render(EVERYTHING)
    [hook] = manifests.one("MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["objectSelector"]["matchLabels"] == {"inject": "yes"}
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", "kube-node-lease"]

    deployment = manifests.one("Deployment", "gateway")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    hpa = manifests.one("HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]

    monitor = manifests.one("ServiceMonitor", "gateway")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/convostore/metrics"
    assert (
        monitor["spec"]["selector"]["matchLabels"] == manifests.one("Service", "gateway")["spec"]["selector"]
    )

    sidecar = container(deployment)
    assert env(sidecar)["CONVOSTORE_CONFIG"] == "/etc/convostore/policy.yaml"
    policy = next(s for s in manifests.all("Secret") if "policy.yaml" in s.get("stringData", {}))
    assert yaml.safe_load(policy["stringData"]["policy.yaml"]) == {
        "policies": {"default": {"keep_last_turns": 8}}
    }
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["policy"]["secret"]["secretName"] == policy["metadata"]["name"]


def test_dashboard_labels_and_namespace_are_values() -> None:
    labels = {"grafana_dashboard": "convostore"}
    annotations = {"grafana_folder": "LLM"}
    manifests = render(
        {"dashboards": {"labels": labels, "namespace": "monitoring", "annotations": annotations}}
    )
    dashboard = manifests.one("ConfigMap", "dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "convostore"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == annotations
    assert "ConfigMap" not in render({"dashboards": {"enabled": False}}).kinds()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis": {"url": "redis://a:6379", "internal": {"enabled": True}}}, "set only one of"),
        ({"gateway": {"replicaCount": 2}}, "needs a shared Redis"),
        ({"gateway": {"autoscaling": {"enabled": True}}}, "needs a shared Redis"),
        ({"webhook": {"enabled": True, "failurePolicy": "Sometimes"}}, "failurePolicy"),
        ({"upstream": {"url": "vllm:8000"}}, "upstream/url"),
        ({"gatway": {"enabled": True}}, "gatway"),
    ],
)
def test_contradictory_or_mistyped_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)
