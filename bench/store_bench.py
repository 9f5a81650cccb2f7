"""`python -m bench store`: Store API latency on a preloaded Redis, round trips, Redis memory per turn."""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

from sidecar.ids import conversation_tag
from sidecar.keys import ConversationKeys, records_key
from sidecar.store import RedisStore
from tests.fixtures.redis_servers import redis_call
from tests.store.conftest import Monitor

from .processes import RedisServer
from .report import kv_table, machine, summarise, write_json
from .store_preload import TENANT, TTL_SECONDS, Population, TurnFactory, preload

_RESOLVE_P50_MS, _RESOLVE_P99_MS, _APPEND_P50_MS, _MEMORY_RATIO = 0.3, 1.5, 0.5, 1.3


# --------------------------------------------------------------------------------------------------
# timed Store API operations


async def timed(label: str, calls: list[Any]) -> dict[str, Any]:
    """Run coroutine factories one after another (concurrency 1); latency summary in ms."""
    latencies = []
    for call in calls:
        start = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - start) * 1000)
    lat = summarise(latencies)
    result: dict[str, Any] = {"operation": label, "count": len(latencies), "latency_ms": lat}
    print(
        f"  {label:38s} n={len(latencies):5d} p50={lat['p50']:.3f} p95={lat['p95']:.3f} p99={lat['p99']:.3f}",
        file=sys.stderr,
        flush=True,
    )
    return result


def used_memory(port: int) -> int:
    info = str(redis_call(port, "INFO", "memory"))
    return int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("used_memory:")))


def conversation_memory(port: int, conv: str, response_ids: list[str]) -> dict[str, dict[str, Any]]:
    """MEMORY USAGE (exact: SAMPLES 0) and encoding of each key of one conversation, by kind. Key names
    are built, not scanned: a SCAN MATCH walks the whole keyspace, minutes on a preloaded server."""
    keys = ConversationKeys(conversation_tag(TENANT, conv), TENANT, conv)
    segments = int(str(redis_call(port, "HGET", keys.meta, "nseg") or 1))
    named = [("meta hash", keys.meta), ("response id set", keys.prefix + "resps")]
    named += [("segment list seg:N (item bytes)", keys.segment(n)) for n in range(segments)]
    named += [("response records list (per slot)", records_key(keys.tag))]
    kinds: dict[str, dict[str, Any]] = {}
    for kind, key in named:
        usage = redis_call(port, "MEMORY", "USAGE", key, "SAMPLES", "0")
        if usage is None:
            continue
        entry = kinds.setdefault(kind, {"keys": 0, "bytes": 0, "encoding": set()})
        entry["keys"] += 1
        entry["bytes"] += int(str(usage))
        entry["encoding"].add(str(redis_call(port, "OBJECT", "ENCODING", key)))
    return kinds


def memory_by_kind(port: int, chains: list[tuple[str, list[str]]], turns: int) -> dict[str, dict[str, Any]]:
    total: dict[str, dict[str, Any]] = {}
    for conv, response_ids in chains:
        for kind, entry in conversation_memory(port, conv, response_ids).items():
            agg = total.setdefault(kind, {"keys": 0, "bytes": 0, "encoding": set()})
            agg["keys"] += entry["keys"]
            agg["bytes"] += entry["bytes"]
            agg["encoding"] |= entry["encoding"]
    return {
        kind: {
            "keys_per_conversation": e["keys"] / len(chains),
            "bytes_per_turn": e["bytes"] / (len(chains) * turns),
            "encoding": sorted(e["encoding"]),
        }
        for kind, e in sorted(total.items())
    }


async def round_trips(server: RedisServer, operations: dict[str, Any]) -> dict[str, list[str]]:
    """The client commands (MONITOR, script-internal ones left out) each operation sends."""
    seen = {}
    for label, call in operations.items():
        monitor = Monitor([server.port])
        await call()
        seen[label] = monitor.commands()
    return seen


def sizing_note(bytes_per_turn: float, turns: int) -> dict[str, Any]:
    sessions = 1_000_000
    data_gb = bytes_per_turn * turns * sessions / 1e9
    per_master_gb = 16.0  # a common node size
    fill = 0.7  # headroom for fork/COW on BGSAVE/AOF rewrite, fragmentation and traffic buffers
    masters = max(3, math.ceil(data_gb / (per_master_gb * fill)))
    return {
        "sessions": sessions,
        "turns_per_session": turns,
        "bytes_per_turn_measured": bytes_per_turn,
        "data_gb": data_gb,
        "node_gb": per_master_gb,
        "fill": fill,
        "masters": masters,
        "replicas_per_master": 1,
        "total_nodes": masters * 2,
        "total_ram_gb": masters * 2 * per_master_gb,
        "text": (
            f"1,000,000 sessions x {turns} turns x {bytes_per_turn:.0f} B/turn (measured) = {data_gb:.1f} GB "
            f"of Redis data; on {per_master_gb:.0f} GB nodes filled to {fill:.0%} that is {masters} masters "
            f"(+{masters} replicas, {masters * 2 * per_master_gb:.0f} GB RAM in all). Every key of a "
            "conversation shares one {tag} hash slot, so sessions spread evenly over the 16384 slots and "
            "each resolve/append stays one round trip to one shard."
        ),
    }


async def measure(
    server: RedisServer, population: Population, factory: TurnFactory, samples: int, rng: random.Random
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    store = await RedisStore.connect(server.url, TTL_SECONDS)
    try:
        chains = population.chains
        pick = rng.sample(range(len(chains)), min(samples, len(chains)))
        half = max(1, len(chains[0][1]) // 2)
        results = []
        await store.resolve_response(TENANT, chains[0][1][0])  # open the pool's first connection untimed
        results.append(
            await timed(
                "resolve depth 1",
                [(lambda ids=chains[i][1]: store.resolve_response(TENANT, ids[0])) for i in pick],
            )
        )
        results.append(
            await timed(
                f"resolve depth {len(chains[0][1])}",
                [(lambda ids=chains[i][1]: store.resolve_response(TENANT, ids[-1])) for i in pick],
            )
        )
        branch_tips: list[str] = []

        async def branch(conv: str, ids: list[str]) -> None:
            turn = factory.turn(conv, conversation_tag(TENANT, conv), half, ids[half - 1], mint=True)
            result = await store.append_turn(turn)
            assert result.response_id is not None
            branch_tips.append(result.response_id)

        results.append(
            await timed(
                f"append branch (off turn {half}, new segment)",
                [(lambda c=chains[i]: branch(*c)) for i in pick],
            )
        )
        results.append(
            await timed(
                f"resolve branch (turn {half}+1, 2 segments)",
                [(lambda rid=rid: store.resolve_response(TENANT, rid)) for rid in branch_tips],
            )
        )

        async def extend(conv: str, ids: list[str]) -> None:
            turn = factory.turn(conv, conversation_tag(TENANT, conv), len(ids), ids[-1], mint=True)
            result = await store.append_turn(turn)
            assert result.response_id is not None
            ids.append(result.response_id)

        results.append(
            await timed("append chained at head", [(lambda c=chains[i]: extend(*c)) for i in pick])
        )
        fresh = [f"conv_new{n:020x}" for n in range(len(pick))]
        results.append(
            await timed(
                "append first turn (new conversation)",
                [
                    (
                        lambda conv=conv: store.append_turn(
                            factory.turn(conv, conversation_tag(TENANT, conv), 0, None, mint=True)
                        )
                    )
                    for conv in fresh
                ],
            )
        )

        _, ids = chains[pick[0]]
        full = await store.resolve_response(TENANT, ids[-2])
        assert full is not None and len(full.items) == 2 * (len(ids) - 1), "deep resolve lost items"
        conv2, ids2 = chains[pick[-1]]
        labels = [r["operation"] for r in results]
        trips = await round_trips(
            server,
            dict(
                zip(
                    labels,
                    [
                        lambda: store.resolve_response(TENANT, ids[0]),
                        lambda: store.resolve_response(TENANT, ids[-1]),
                        lambda: branch(conv2, ids2),
                        lambda: store.resolve_response(TENANT, branch_tips[-1]),
                        lambda: extend(conv2, ids2),
                        lambda: store.append_turn(
                            factory.turn("conv_once", conversation_tag(TENANT, "conv_once"), 0, None)
                        ),
                    ],
                    strict=True,
                )
            ),
        )
        for op in results:
            op["client_commands"] = trips[op["operation"]]
        return results, trips
    finally:
        await store.close()


def run(
    *,
    quick: bool,
    out: Path,
    conversations: int | None,
    turns: int,
    preload_seconds: float | None,
    samples: int | None,
) -> dict[str, Any]:
    conversations = conversations or (200 if quick else 100_000)
    preload_seconds = preload_seconds or (20.0 if quick else 240.0)
    samples = samples or (200 if quick else 5000)
    rng = random.Random(7)
    factory = TurnFactory(rng)
    started_at = time.monotonic()
    with RedisServer() as server:
        before = used_memory(server.port)
        print(
            f"preloading up to {conversations} conversations x {turns} turns "
            f"(at most {preload_seconds:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
        population = asyncio.run(preload(server.port, conversations, turns, preload_seconds, factory))
        after = used_memory(server.port)
        per_turn = (after - before) / max(1, population.turns)
        payload_items = population.item_bytes / max(1, population.turns)
        payload_all = (population.item_bytes + population.record_bytes) / max(1, population.turns)
        sample_convs = rng.sample(population.chains, min(20, len(population.chains)))
        by_kind = memory_by_kind(server.port, sample_convs, turns)
        per_turn_keys = sum(k["bytes_per_turn"] for k in by_kind.values())
        print(
            f"loaded {population.conversations} conversations ({population.turns} turns) in "
            f"{population.seconds:.0f}s; used_memory +{(after - before) / 1e6:.0f} MB",
            file=sys.stderr,
        )
        server.reset_stats()
        import uvloop

        operations, trips = uvloop.run(measure(server, population, factory, samples, rng))
    by_op = {op["operation"]: op for op in operations}
    resolves = [op for name, op in by_op.items() if name.startswith("resolve")]
    append_head = by_op["append chained at head"]
    checks = [
        *(
            {
                "target": f"{op['operation']}: p50 <= {_RESOLVE_P50_MS} ms",
                "value": op["latency_ms"]["p50"],
                "ok": op["latency_ms"]["p50"] <= _RESOLVE_P50_MS,
            }
            for op in resolves
        ),
        *(
            {
                "target": f"{op['operation']}: p99 <= {_RESOLVE_P99_MS} ms",
                "value": op["latency_ms"]["p99"],
                "ok": op["latency_ms"]["p99"] <= _RESOLVE_P99_MS,
            }
            for op in resolves
        ),
        {
            "target": f"append chained at head: p50 <= {_APPEND_P50_MS} ms",
            "value": append_head["latency_ms"]["p50"],
            "ok": append_head["latency_ms"]["p50"] <= _APPEND_P50_MS,
        },
        {
            "target": f"Redis memory per turn <= {_MEMORY_RATIO} x normalised payload (items + record)",
            "value": per_turn / payload_all,
            "ok": per_turn / payload_all <= _MEMORY_RATIO,
        },
        *(
            {"target": f"{name}: exactly one round trip", "value": len(cmds), "ok": cmds == ["evalsha"]}
            for name, cmds in trips.items()
        ),
    ]
    result = {
        "kind": "store",
        "quick": quick,
        "machine": machine(),
        "wall_seconds": time.monotonic() - started_at,
        "population": {
            "conversations_requested": conversations,
            "conversations_loaded": population.conversations,
            "turns_per_conversation": turns,
            "turns_loaded": population.turns,
            "preload_seconds": population.seconds,
            "preload_limit_seconds": preload_seconds,
            "turns_per_second": population.turns / max(population.seconds, 1e-9),
        },
        "memory": {
            "used_memory_delta_bytes": after - before,
            "bytes_per_turn": per_turn,
            "bytes_per_turn_memory_usage_sample": per_turn_keys,
            "by_key_kind": by_kind,
            "payload_item_bytes_per_turn": payload_items,
            "payload_bytes_per_turn": payload_all,
            "ratio_to_payload": per_turn / payload_all,
            "ratio_to_item_payload": per_turn / payload_items,
        },
        "operations": operations,
        "round_trips": trips,
        "targets": checks,
        "sizing_1m_sessions": sizing_note(per_turn, turns),
    }
    write_json(out, result)
    _print(result)
    print(f"wrote {out}")
    return result


def _print(result: dict[str, Any]) -> None:
    pop, mem = result["population"], result["memory"]
    print(
        f"population: {pop['conversations_loaded']} of {pop['conversations_requested']} conversations x "
        f"{pop['turns_per_conversation']} turns = {pop['turns_loaded']} turns, "
        f"loaded in {pop['preload_seconds']:.0f}s "
        f"({pop['turns_per_second']:.0f} turns/s, limit {pop['preload_limit_seconds']:.0f}s)"
    )
    header = f"  {'operation':44s} {'n':>6s} {'p50':>7s} {'p95':>7s} {'p99':>7s}  client commands"
    print(header)
    for op in result["operations"]:
        lat = op["latency_ms"]
        print(
            f"  {op['operation']:44s} {op['count']:6d} "
            f"{lat['p50']:7.3f} {lat['p95']:7.3f} {lat['p99']:7.3f}  "
            f"{' '.join(op['client_commands'])}"
        )
    print(
        kv_table(
            [
                ("Redis bytes per turn (INFO used_memory delta)", f"{mem['bytes_per_turn']:.0f}"),
                (
                    "Redis bytes per turn (MEMORY USAGE, 20 conversations)",
                    f"{mem['bytes_per_turn_memory_usage_sample']:.0f}",
                ),
                ("normalised payload per turn (items + record)", f"{mem['payload_bytes_per_turn']:.0f}"),
                ("  of which items", f"{mem['payload_item_bytes_per_turn']:.0f}"),
                ("ratio to payload", f"{mem['ratio_to_payload']:.2f}x"),
                *(
                    (
                        f"  {kind} ({'/'.join(e['encoding'])}, "
                        f"{e['keys_per_conversation']:.0f} per conversation)",
                        f"{e['bytes_per_turn']:.0f} B/turn",
                    )
                    for kind, e in mem["by_key_kind"].items()
                ),
            ]
        )
    )
    print("targets:")
    for check in result["targets"]:
        print(f"  [{'ok' if check['ok'] else 'MISS'}] {check['target']}: {check['value']:.3f}")
    print("sizing: " + result["sizing_1m_sessions"]["text"])
