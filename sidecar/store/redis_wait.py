"""Writes acknowledged by replicas (Redis WAIT): on a cluster the script and its WAIT go down one connection
to the key's primary, since redis-py routes a keyless WAIT to any node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import PipelineCommand, RedisCluster
from redis.exceptions import NoScriptError, ResponseError


@dataclass(frozen=True, slots=True)
class Replication:
    """Acknowledge a stored turn only once `replicas` replicas have it (Redis WAIT), or after the timeout:
    without it, a failover can lose the turns the old primary had not yet passed on."""

    replicas: int
    timeout_ms: int


async def cluster_call_and_wait(
    cluster: RedisCluster, script: Any, keys: list[str], args: list[Any], wait: Replication
) -> tuple[Any, int]:
    """The script and WAIT on one connection to the key's primary (redis-py routes a keyless WAIT anywhere
    else); a slot that moved meanwhile goes through the client's own routing, unacknowledged."""
    node = cluster.get_node_from_key(keys[0])
    if node is None:
        return await script(keys=keys, args=args), 0
    for attempt in range(2):
        commands = [
            PipelineCommand(0, "EVALSHA", script.sha, len(keys), *keys, *args),
            PipelineCommand(1, "WAIT", wait.replicas, wait.timeout_ms),
        ]
        await node.execute_pipeline(commands)
        reply, acked = commands[0].result, commands[1].result
        if isinstance(reply, NoScriptError) and attempt == 0:
            await node.execute_command("SCRIPT", "LOAD", script.script)
            continue
        if isinstance(reply, ResponseError) and str(reply).startswith(("MOVED", "ASK")):
            return await script(keys=keys, args=args), 0
        if isinstance(reply, BaseException):
            raise reply
        return reply, acked if isinstance(acked, int) else 0
    raise AssertionError("unreachable")
