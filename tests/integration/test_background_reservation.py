"""A background run that outlives its turn's reservation and idempotency claim (CLAIM_SECONDS in the store)
still stores its turn: its runner renews both while it runs (here with a claim life of a fraction of a
second, on memory and on a real redis-server)."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
from aiohttp.test_utils import TestServer

from tests.fixtures.fake_engine import recorded
from tests.integration.conftest import CLAIM_MS
from tests.integration.test_background import poll, raw_get, slow


async def test_a_run_longer_than_its_claim_stores_its_turn(short_claims: Any, engine: TestServer) -> None:
    sidecar = short_claims
    slow(engine, 0.1, 15)  # 1.5 s: five claim lives
    client = openai.AsyncOpenAI(base_url=str(sidecar.make_url("/v1")), api_key="sk-test", max_retries=0)
    key = {"Idempotency-Key": "long-run-1"}
    resp = await sidecar.post(
        "/v1/responses", json={"model": "m", "input": "a long one", "background": True}, headers=key
    )
    assert resp.status == 200, await resp.text()
    response_id = (await resp.json())["id"]
    await asyncio.sleep(CLAIM_MS * 2 / 1000)
    # The key is still claimed by the run: a retry waits for it and replays it, never runs again
    # (before runs renewed their claim, the retry ran the request a second time).
    retry = await sidecar.post(
        "/v1/responses", json={"model": "m", "input": "a long one", "background": True}, headers=key
    )
    assert retry.status == 200, await retry.text()
    assert (await retry.json())["id"] == response_id
    done = await poll(client, response_id)
    assert done.status == "completed", done
    stored = await raw_get(sidecar, response_id)
    assert stored["status"] == "completed"
    assert len(recorded(engine.app, "/v1/responses")) == 1
    # Stored: it chains (before runs renewed their reservation, memory refused the write).
    chained = await client.responses.create(model="m", input="next", previous_response_id=response_id)
    assert chained.status == "completed"
    await client.close()
