"""One store suite, three backends: memory, a standalone redis-server and a 3-master Redis Cluster."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sidecar.store import MemoryStore, RedisStore, Store

TTL = 3600


class Backend:
    """A store under test plus, for Redis, the server whose commands a test can monitor."""

    def __init__(self, name: str, store: Store, server: Any | None) -> None:
        self.name = name
        self.store = store
        self.server = server

    def monitor(self) -> Monitor:
        ports = getattr(self.server, "ports", None) or [self.server.port]
        return Monitor(ports)


class Monitor:
    """Commands clients sent, as MONITOR sees them; commands run inside scripts ("[0 lua]") are not
    round trips and are left out."""

    MARKER = "convostore-monitor-marker"

    def __init__(self, ports: list[int]) -> None:
        self._ports = ports
        self._socks = []
        for port in ports:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"MONITOR\r\n")
            assert sock.recv(5) == b"+OK\r\n"
            self._socks.append(sock)

    def commands(self, in_scripts: bool = False) -> list[str]:
        """Stop monitoring and return each client command's name, lower case (with `in_scripts`, only
        the commands scripts ran)."""
        commands: list[str] = []
        for port, sock in zip(self._ports, self._socks, strict=True):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as marker:
                marker.sendall(f"ECHO {self.MARKER}\r\n".encode())
                marker.recv(100)
            data = b""
            while self.MARKER.encode() not in data:
                data += sock.recv(65536)
            sock.close()
            for line in data.decode(errors="replace").splitlines():
                if self.MARKER in line or ("[0 lua]" in line) != in_scripts or "] " not in line:
                    continue
                commands.append(line.split("] ", 1)[1].split(" ", 1)[0].strip('"').lower())
        return commands


@pytest.fixture(params=["memory", "redis", "cluster"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield Backend("memory", MemoryStore(TTL), None)
        return
    server = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster")
    server.flushall()
    store = await RedisStore.connect(server.url, TTL)
    try:
        yield Backend(request.param, store, server)
    finally:
        await store.close()
