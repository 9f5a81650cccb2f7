"""Start-up as a newcomer meets it: the sidecar comes up without its Redis and connects when Redis
appears; every bad setting stops it with one line naming the flag or variable that was set."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.redis_servers import RedisServer, free_port
from tests.fixtures.sidecar_process import CONVOSTORE_BIN
from tests.process.processes import Process, fake_engine, one_error_line, serve_and_stop, sidecar


@pytest.fixture
def engine() -> Iterator[Process]:
    proc = fake_engine("ok")
    try:
        yield proc
    finally:
        proc.close()


async def test_redis_down_at_start_up_then_connected_when_it_appears(engine: Process) -> None:
    redis = RedisServer(appendonly=True)  # its dir (and port) survive kill() for restart()
    try:
        redis.kill()
        proc = sidecar(upstream=engine.url, redis_url=redis.url)
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"{proc.url}/convostore/healthz") as health:
                    assert health.status == 200
                async with client.get(f"{proc.url}/convostore/readyz") as ready:
                    assert ready.status == 503
                    (reason,) = (await ready.json())["reasons"]
                    assert reason.startswith("store unreachable") and str(redis.port) in reason
                append = {"role": "user", "content": "hello"}
                async with client.post(f"{proc.url}/v1/sessions/conv_late/append", json=append) as down:
                    assert down.status == 503
                    assert (await down.json())["error"]["code"] == "store_unavailable"
                async with client.get(f"{proc.url}/v1/models") as models:
                    assert models.status == 200  # pass-through needs no store

                redis.restart()
                for _ in range(100):
                    async with client.get(f"{proc.url}/convostore/readyz") as ready:
                        if ready.status == 200:
                            break
                    await asyncio.sleep(0.1)
                assert ready.status == 200
                async with client.post(f"{proc.url}/v1/sessions/conv_late/append", json=append) as up:
                    assert up.status == 200 and (await up.json())["version"] == 1
            proc.stop()
            log = proc.log()
        finally:
            proc.close()
    finally:
        redis.stop()
    store_lines = [line for line in log.splitlines() if "convostore.store" in line]
    assert [" WARNING " in line for line in store_lines] == [True, False], log  # down, then connected
    assert "store unreachable at start-up" in store_lines[0] and "connected" in store_lines[1]
    assert "Traceback" not in log


async def test_an_unreachable_redis_password_is_never_shown(engine: Process) -> None:
    unreachable = f"redis://:s3cr3t-pw@127.0.0.1:{free_port()}/0"
    proc = sidecar(upstream=engine.url, redis_url=unreachable)
    try:
        async with aiohttp.ClientSession() as client, client.get(f"{proc.url}/convostore/readyz") as ready:
            assert ready.status == 503
            reasons = await ready.text()
        proc.stop()
        log = proc.log()
    finally:
        proc.close()
    assert "cannot reach Redis at redis://:***@127.0.0.1" in log and "redis://:***@127.0.0.1" in reasons
    assert "s3cr3t-pw" not in log + reasons and "Traceback" not in log


def test_a_bad_flag_is_one_line_naming_the_flag() -> None:
    line = one_error_line(serve_and_stop("--upstream-api", "grpc"))
    assert "--upstream-api" in line and "'grpc'" in line and "usage" not in line


def test_a_bad_variable_is_one_line_naming_the_variable() -> None:
    line = one_error_line(serve_and_stop(env={"CONVOSTORE_UPSTREAM_API": "grpc"}))
    assert line.startswith("convostore: configuration error: CONVOSTORE_UPSTREAM_API:")
    assert "--upstream-api" not in line


def test_a_bad_tracing_setting_is_one_line_too() -> None:
    # Read when the app is built, after the other settings: still one line, no traceback.
    assert "error: CONVOSTORE_TRACING=" in one_error_line(serve_and_stop(env={"CONVOSTORE_TRACING": "bogus"}))


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
@pytest.mark.parametrize("variable", ["CONVOSTORE_UPSTREAM_TIMEOUT_SECONDS", "CONVOSTORE_DRAIN_SECONDS"])
def test_seconds_must_be_positive(variable: str, value: str) -> None:
    assert f"error: {variable}:" in one_error_line(serve_and_stop(env={variable: value}))


def test_a_mistyped_key_in_the_policy_file_stops_start_up(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("tenants:\n  acme:\n    api_key: sk-acme-1\n")
    line = one_error_line(serve_and_stop("--config", str(policy), env={"CONVOSTORE_AUTH": "api_keys"}))
    assert "--config" in line and "tenants.acme: unknown key 'api_key'" in line


def test_a_taken_port_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(CONVOSTORE_BIN), "serve", "--listen", f"127.0.0.1:{port}", "--log-format", "text"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"convostore: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr
