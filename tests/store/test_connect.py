"""Connecting: unix sockets, and Redis Cluster detected by itself from a plain redis:// URL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from sidecar.store import RedisStore, Turn, open_store
from sidecar.store.base import StoreDown
from sidecar.store.memory import MemoryStore
from tests.fixtures.redis_servers import RedisCluster as ClusterProcesses
from tests.fixtures.redis_servers import RedisServer, free_port
from tests.store.test_store import TENANT, conv_id, item, texts


async def test_unix_socket_url() -> None:
    server = RedisServer(extra_args=["--unixsocket", "redis.sock", "--unixsocketperm", "700"])
    try:
        store = await open_store(f"unix://{server.dir}/redis.sock", 60)
        assert isinstance(store, RedisStore)
        conv = conv_id()
        await store.append_turn(Turn(TENANT, conv, [item(conv, "via unix")], n_input=1))
        history = await store.resolve_conversation(TENANT, conv)
        assert history is not None and texts(history.items) == ["via unix"]
        await store.close()
    finally:
        server.stop()


async def test_cluster_is_detected(redis_cluster: ClusterProcesses) -> None:
    store = await open_store(redis_cluster.url, 60)
    try:
        assert isinstance(store, RedisStore) and isinstance(store.client, RedisCluster)
    finally:
        await store.close()


async def test_memory_url_is_the_embedded_store() -> None:
    assert isinstance(await open_store("memory://", 60), MemoryStore)


def test_store_works_on_uvloop(redis_server: RedisServer) -> None:
    """The sidecar runs on uvloop, whose transports are not asyncio.Transport subclasses."""
    import uvloop

    async def round_trip() -> list[str]:
        store = await RedisStore.connect(redis_server.url, 60)
        try:
            conv = conv_id()
            await store.append_turn(Turn(TENANT, conv, [item(conv, "on uvloop")], n_input=1))
            history = await store.resolve_conversation(TENANT, conv)
            assert history is not None
            return texts(history.items)
        finally:
            await store.close()

    assert uvloop.run(round_trip()) == ["on uvloop"]


async def test_rediss_url_with_a_private_ca(tmp_path: Path) -> None:
    """TLS (rediss://) with the CA given in the URL, as redis-py spells the option."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    tls_port = free_port()
    server = RedisServer(
        extra_args=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
        ]
    )
    try:
        store = await open_store(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}", 60)
        conv = conv_id()
        await store.append_turn(Turn(TENANT, conv, [item(conv, "over tls")], n_input=1))
        history = await store.resolve_conversation(TENANT, conv)
        assert history is not None and texts(history.items) == ["over tls"]
        await store.close()
        with pytest.raises(StoreDown):  # the server's certificate is not trusted without the CA
            await open_store(f"rediss://127.0.0.1:{tls_port}/0", 60)
    finally:
        server.stop()
