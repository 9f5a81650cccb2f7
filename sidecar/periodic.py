"""A background task that repeats for as long as a context is open (sweeps, reapers, reconcilers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable


@contextlib.asynccontextmanager
async def every(interval: float, tick: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Await `tick()` every `interval` seconds (the first after one interval) until the context exits; then
    the task is cancelled and waited for. `tick` handles its own failures: one that raises ends the task."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            await tick()

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
