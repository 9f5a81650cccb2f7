"""Races on the real engine: one engine call per Idempotency-Key however many retries race it, and every
concurrent first turn of a new conversation stored (both upstream modes, through the openai SDK)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.request

import openai
import pytest

from tests.fixtures.sidecar_process import SidecarProcess

pytestmark = pytest.mark.slow


def engine_calls(sidecar: SidecarProcess) -> int:
    """Engine calls the sidecar made: the count of its first-byte histogram."""
    with urllib.request.urlopen(f"{sidecar.url}/convostore/metrics", timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(r"^convostore_upstream_first_byte_ms_count(?:\{[^}]*\})? (\S+)$", text, re.M)
    return int(float(match.group(1))) if match else 0


async def test_racing_retries_with_one_key_make_one_engine_call(sidecar: SidecarProcess) -> None:
    client = openai.AsyncOpenAI(base_url=f"{sidecar.url}/v1", api_key="unused", max_retries=0)
    try:
        key = {"Idempotency-Key": f"race-{os.urandom(6).hex()}"}
        before = engine_calls(sidecar)
        answers = await asyncio.gather(
            *(
                client.responses.create(
                    model="m", input="Name a colour.", max_output_tokens=8, extra_headers=key
                )
                for _ in range(4)
            )
        )
        assert len({a.id for a in answers}) == 1
        assert len({a.output_text for a in answers}) == 1
        assert engine_calls(sidecar) == before + 1
        stored = await client.responses.retrieve(answers[0].id)
        assert stored.output_text == answers[0].output_text
    finally:
        await client.close()


async def test_concurrent_first_chats_on_a_new_conversation_are_all_stored(sidecar: SidecarProcess) -> None:
    client = openai.AsyncOpenAI(base_url=f"{sidecar.url}/v1", api_key="unused", max_retries=0)
    conv = f"race-{os.urandom(6).hex()}"
    try:

        async def turn(n: int) -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="m",
                messages=[{"role": "user", "content": f"Say {n}."}],
                max_tokens=8,
                extra_headers={"X-Conversation-Id": conv},
            )
            raw.parse()
            return raw.headers["X-Response-Id"]

        ids = await asyncio.gather(*(turn(n) for n in range(4)))
        assert len(set(ids)) == 4
        for rid in ids:
            assert (await client.responses.retrieve(rid)).status in ("completed", "incomplete")
        with urllib.request.urlopen(f"{sidecar.url}/v1/sessions/{conv}", timeout=5) as resp:
            session = json.loads(resp.read())
        assert session["turns"] == 4 and session["version"] == 4
    finally:
        await client.close()
