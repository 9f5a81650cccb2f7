"""Which engine routes the pass-through forwards (docs/api.md §9 `passthrough`): every one for a transparent
proxy; once tenants authenticate, the inference and information routes only, so a tenant's key cannot reach
an engine's operator routes (vLLM's /reset_prefix_cache, llama-server's /slots). The policy file widens or
narrows the list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.config import Config, ConfigError
from tests.fixtures.fake_engine import recorded
from tests.integration.conftest import SidecarFactory

Client = TestClient[Any, Any]
KEY = {"Authorization": "Bearer sk-acme"}
OPERATOR_ROUTES = [
    ("POST", "/reset_prefix_cache"),
    ("POST", "/sleep"),
    ("POST", "/v1/load_lora_adapter"),
    ("POST", "/slots/0?action=save"),
    ("POST", "/props"),
    ("GET", "/metrics"),
    ("POST", "/v1/responses/"),  # not the sidecar's /v1/responses: an engine would store it there
    ("POST", "/v1/chat/completions/extra"),
]


def policy_file(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "policy.yaml"
    path.write_text("tenants:\n  acme:\n    api_keys: [sk-acme]\n" + extra)
    return str(path)


async def sidecar_with(make_sidecar: SidecarFactory, engine: TestServer, auth: str, policy: str) -> Client:
    upstream = str(engine.make_url("")).rstrip("/")
    return await make_sidecar(redis_url="memory://", auth=auth, config_path=policy, upstream=upstream)


async def refused_here(answer: Any) -> bool:
    """The sidecar's own 404 for a route it does not forward (the fake engine's is plain text)."""
    if answer.status != 404 or answer.content_type != "application/json":
        return False
    return bool((await answer.json())["error"]["code"] == "unknown_url")


def engine_paths(engine: TestServer) -> list[str]:
    return [str(call["path"]) for call in recorded(engine.app)]


@pytest.mark.parametrize("auth", ["api_keys", "none"])
async def test_operator_routes_are_refused_once_tenants_authenticate(
    auth: str, make_sidecar: SidecarFactory, engine: TestServer, tmp_path: Path
) -> None:
    sidecar = await sidecar_with(make_sidecar, engine, auth, policy_file(tmp_path))
    for method, target in OPERATOR_ROUTES:
        answer = await sidecar.request(method, target, headers=KEY, json={})
        if auth == "none":  # a transparent proxy: the engine answers (the fake one with its 404)
            assert not await refused_here(answer), (method, target)
            continue
        assert answer.status == 404, (method, target)
        error = (await answer.json())["error"]
        assert error["code"] == "unknown_url" and error["type"] == "invalid_request_error", error
        assert error["message"] == f"Invalid URL ({method} {target.split('?')[0]})"
    reached = engine_paths(engine)
    if auth == "none":
        assert len(reached) == len(OPERATOR_ROUTES)
    else:
        assert reached == []


async def test_inference_routes_pass_with_a_tenants_key(
    make_sidecar: SidecarFactory, engine: TestServer, tmp_path: Path
) -> None:
    sidecar = await sidecar_with(make_sidecar, engine, "api_keys", policy_file(tmp_path))
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    calls = [
        ("GET", "/v1/models", None),
        ("HEAD", "/health", None),
        ("POST", "/v1/chat/completions", chat),
        ("POST", "/v1/embeddings", {"model": "m", "input": "hi"}),
        ("POST", "/tokenize", {"model": "m", "prompt": "hi"}),
    ]
    for method, path, body in calls:
        answer = await sidecar.request(method, path, headers=KEY, json=body)
        assert answer.status == 200, (method, path, await answer.text())
    assert engine_paths(engine) == [path for _, path, _ in calls]


async def test_the_policy_file_widens_or_narrows_the_list(
    make_sidecar: SidecarFactory, engine: TestServer, tmp_path: Path
) -> None:
    widened = policy_file(tmp_path, 'passthrough: [inference, "POST /reset_prefix_cache", "GET /slots*"]\n')
    sidecar = await sidecar_with(make_sidecar, engine, "api_keys", widened)
    for method, path in (("POST", "/reset_prefix_cache"), ("GET", "/slots"), ("GET", "/v1/models")):
        assert not await refused_here(await sidecar.request(method, path, headers=KEY)), (method, path)
    assert await refused_here(await sidecar.post("/sleep", headers=KEY))
    assert engine_paths(engine) == ["/reset_prefix_cache", "/slots", "/v1/models"]

    narrowed = tmp_path / "narrow"
    narrowed.mkdir()
    sidecar = await sidecar_with(
        make_sidecar, engine, "api_keys", policy_file(narrowed, 'passthrough: ["GET /v1/models"]\n')
    )
    assert (await sidecar.get("/v1/models", headers=KEY)).status == 200
    assert await refused_here(await sidecar.post("/v1/embeddings", headers=KEY, json={"input": "x"}))

    everything = tmp_path / "all"
    everything.mkdir()
    sidecar = await sidecar_with(
        make_sidecar, engine, "api_keys", policy_file(everything, "passthrough: all\n")
    )
    await sidecar.post("/reset_prefix_cache", headers=KEY)
    assert engine_paths(engine)[-1] == "/reset_prefix_cache"


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("some", "passthrough: must be 'all', 'inference' or a list of routes"),
        ("[FETCH /x]", "passthrough[0]: 'FETCH /x': the method must be one of"),
        ("[POST v1/x]", "passthrough[0]: 'POST v1/x': expected 'METHOD /path'"),
        ("[all]", "passthrough[0]: 'all': the method must be one of"),
        ("[3]", "passthrough[0]: expected a string like 'POST /v1/completions'"),
    ],
)
def test_a_bad_list_stops_start_up_naming_the_entry(tmp_path: Path, setting: str, problem: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(f"passthrough: {setting}\n")
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        Config.from_env({"CONVOSTORE_CONFIG": str(path)})
