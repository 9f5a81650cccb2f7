"""The process's runner and reaper, opened with the app (after the store and the engine) and closed first."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..appkeys import METRICS, STORE
from .reaper import reaping
from .runner import Runner

RUNS: web.AppKey[Runner] = web.AppKey("runs", Runner)


async def runs_context(app: web.Application) -> AsyncIterator[None]:
    runner = Runner(app[STORE], app[METRICS])
    app[RUNS] = runner
    async with reaping(app[STORE], runner):
        try:
            yield
        finally:
            await runner.close()  # runs still going store what they captured
