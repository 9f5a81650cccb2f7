"""Acknowledged turns survive a Redis restart (AOF, fsync always)."""

from __future__ import annotations

from sidecar.store import RedisStore, Turn
from tests.fixtures.redis_servers import RedisServer
from tests.store.test_store import TENANT, conv_id, item, texts


async def test_every_acknowledged_turn_survives_a_crash_and_restart(redis_aof_server: RedisServer) -> None:
    store = await RedisStore.connect(redis_aof_server.url, 3600)
    conv = conv_id()
    acknowledged: list[str] = []
    previous = None
    for n in range(30):
        result = await store.append_turn(
            Turn(
                TENANT,
                "" if previous else conv,
                [item(conv, f"t{n}")],
                n_input=1,
                parent_response_id=previous,
                mint_response=True,
            )
        )
        rid = result.response_id
        assert rid is not None
        acknowledged.append(rid)
        previous = rid
    await store.close()
    redis_aof_server.kill()  # SIGKILL: no graceful shutdown, only what fsync'd AOF holds
    redis_aof_server.restart()
    store = await RedisStore.connect(redis_aof_server.url, 3600)
    try:
        history = await store.resolve_response(TENANT, acknowledged[-1])
        assert history is not None and texts(history.items) == [f"t{n}" for n in range(30)]
        for n, rid in enumerate(acknowledged):
            resolved = await store.resolve_response(TENANT, rid)
            assert resolved is not None and len(resolved.items) == n + 1
    finally:
        await store.close()
