"""Runs a background response on the replica that accepted it: the engine call as an asyncio task, its
events logged to the store as they come, its lease renewed, a cancel obeyed, its turn stored at the end.

The runner never talks to a client: clients read the log (`follow.py`), on this replica or any other, so
a client that drops its stream changes nothing. The turn is stored before the terminal event is logged,
so whoever sees `response.completed` can chain from it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from ..errors import ConvoStoreError, UpstreamError, engine_rejected
from ..metrics import Metrics
from ..store import Store
from ..turns import TurnPlan, record_response, save_quietly, turn_settled
from ..upstream import EngineAnswer, failure_reason
from ..wire import events as ev
from ..wire.sse import SSEDecoder
from ..wire.translator import StreamTranslator, translate_messages
from .lease import LEASE_MS, RENEW_SECONDS, SLOT_STALE_MS, TURN_RENEW_SECONDS, now_ms
from .record import RunRecord

log = logging.getLogger("convostore.runs")

SHUTDOWN_MESSAGE = "The sidecar shut down before the response finished."


EngineCall = Callable[[], Awaitable[EngineAnswer]]


class _Stopped(Exception):
    """The store said stop: a cancel was asked for, or another replica took the run over."""


@dataclass(slots=True)
class _Run:
    plan: TurnPlan
    record: RunRecord
    translator: StreamTranslator
    engine_call: EngineCall
    pending: list[dict[str, Any]] = field(default_factory=list)  # stamped, maybe not logged yet
    stop: str | None = None  # "cancel" (asked through the store) or "lost" (a reaper took the run over)
    pump: asyncio.Task[list[dict[str, Any]]] | None = None
    status: str = "failed"  # how it ended here: the stored status, or "lost" to a reaper
    finished: bool = False  # its end was logged here (else a reaper settles it: it stays in their index)


class Runner:
    """One per process: starts runs, tracks their tasks, wakes local followers when a run logs events."""

    def __init__(self, store: Store, metrics: Metrics | None = None) -> None:
        self.store = store
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.metrics = metrics or Metrics()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._changed: dict[str, asyncio.Event] = {}

    @property
    def running(self) -> int:
        return len(self._tasks)

    def runs_here(self, response_id: str) -> bool:
        return response_id in self._tasks

    async def start(
        self, plan: TurnPlan, record: RunRecord, translator: StreamTranslator, engine_call: EngineCall
    ) -> None:
        """Record the run (queued, leased to this replica) and start it; the plan is the run's from here."""
        if not await self.store.start_run(
            plan.tenant, plan.response_id, record.encode(), self.owner, LEASE_MS
        ):
            raise RuntimeError(f"a run for {plan.response_id} exists already")
        with contextlib.suppress(Exception):  # only the reapers' index: the lease is the truth
            await self.store.track_run(plan.response_id, now_ms() + LEASE_MS)
        # Nothing awaits after the task exists: a caller cancelled in here has no run to give its turn back
        # under (a run that exists owns the reservation and the slot from its first step).
        run = _Run(plan, record, translator, engine_call)
        self._tasks[plan.response_id] = asyncio.create_task(self._run(run))
        self.metrics.background_started.inc()
        self.metrics.background_running.inc()
        log.info("background response started", extra=_fields(plan))

    # -- followers on this replica -----------------------------------------------------------------------

    async def wait_for_events(self, response_id: str, timeout: float) -> None:
        """Until the run logs more (when it runs here) or `timeout`."""
        changed = self._changed.setdefault(response_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        if self._changed.get(response_id) is changed and not changed.is_set():
            del self._changed[response_id]

    def _notify(self, response_id: str) -> None:
        changed = self._changed.pop(response_id, None)
        if changed is not None:
            changed.set()

    # -- the run ---------------------------------------------------------------------------------------------

    async def _run(self, run: _Run) -> None:
        rid = run.plan.response_id
        try:
            # A run that stores nothing gives its id back; _keep renews what it holds (with its quota slot).
            async with turn_settled(self.store, run.plan, renew=False):
                await self._drive(run)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background response %s failed", rid)
        finally:
            self._tasks.pop(rid, None)
            self._notify(rid)
            self.metrics.background_running.dec()
            self.metrics.background_finished.labels(run.status).inc()
            log.info("background response finished", extra={**_fields(run.plan), "status": run.status})
            if run.finished:  # else the reapers' index keeps it: once its lease lapses, one settles it
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.track_run(rid, None))
            if run.record.holds_slot:  # a reaper that took the run over releases it too: harmless twice
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.release_run_slot(run.plan.tenant, rid))

    async def _drive(self, run: _Run) -> None:
        watcher = asyncio.create_task(self._watch(run))
        keeper = asyncio.create_task(self._keep(run))
        run.pump = asyncio.create_task(self._pump(run))
        translator = run.translator
        try:
            tail = await run.pump
        except asyncio.CancelledError:
            if run.stop is None:  # the process is shutting down: store what was captured
                run.pump.cancel()
                tail = translator.fail(SHUTDOWN_MESSAGE, "server_shutting_down")
                await asyncio.shield(self._finish(run, tail))
                raise
            tail = []
        except _Stopped:
            tail = []
        except ConvoStoreError as exc:  # the engine refused or failed before streaming
            tail = translator.fail(exc.message, str(exc.code or "server_error"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            tail = translator.fail(f"The engine failed mid-stream: {failure_reason(exc)}.", "server_error")
        except Exception:
            log.exception("running background response %s failed", run.plan.response_id)
            tail = translator.fail("The sidecar could not run the engine's stream.", "server_error")
        finally:
            watcher.cancel()
            keeper.cancel()
        if run.stop == "lost":
            self._lost(run)
            return
        if run.stop == "cancel":
            self.metrics.background_cancels.inc()
            log.info("background response cancelled", extra=_fields(run.plan))
            await self._finish(run, [], cancelled=True)
            return
        await self._finish(run, tail)

    async def _pump(self, run: _Run) -> list[dict[str, Any]]:
        """Engine events in, logged events out; returns the last batch, its terminal event last."""
        engine = await run.engine_call()
        try:
            await _require_event_stream(engine)
            decoder = SSEDecoder()
            async for chunk in engine.content.iter_any():
                events = translate_messages(decoder.feed(chunk), run.translator)
                if run.translator.status is not None:
                    return events
                await self._log(run, events)
            return translate_messages(decoder.flush(), run.translator) + run.translator.end(done=False)
        finally:
            engine.close()  # on a cancel too: the engine stops generating
            engine.release()

    async def _log(self, run: _Run, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        run.pending = events
        signal = await self.store.append_run_events(
            run.plan.response_id, self.owner, numbered_events(events), LEASE_MS
        )
        run.pending = []
        self._notify(run.plan.response_id)
        if not signal.owned:
            run.stop = "lost"
        elif signal.cancel:
            run.stop = "cancel"
        if run.stop is not None:
            raise _Stopped

    async def _watch(self, run: _Run) -> None:
        """Renew the lease while the engine is silent (a long prefill) and hear a cancel meanwhile."""
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                signal = await self.store.append_run_events(run.plan.response_id, self.owner, [], LEASE_MS)
            except Exception:  # the store is away: the lease may lapse, then a reaper settles the run
                log.warning("could not renew the lease of background response %s", run.plan.response_id)
                continue
            if signal.owned and not signal.cancel:
                continue
            run.stop = "cancel" if signal.owned else "lost"
            if run.pump is not None:
                run.pump.cancel()
            return

    async def _keep(self, run: _Run) -> None:
        """Keep what the run holds beyond its lease for as long as it runs: the reserved record index and
        the idempotency claim of the turn it will store (they last a claim's life, CLAIM_SECONDS), and its
        tenant's quota slot (stale after SLOT_STALE_MS)."""
        plan = run.plan
        keeps_turn = plan.reserved or plan.claim is not None
        if not keeps_turn and not run.record.holds_slot:
            return
        while True:
            await asyncio.sleep(TURN_RENEW_SECONDS)
            try:
                if keeps_turn:
                    await self.store.renew_turn(
                        plan.tenant, plan.conversation_id, plan.response_id, plan.claim
                    )
                if run.record.holds_slot:
                    await self.store.hold_run_slot(plan.tenant, plan.response_id, 0, SLOT_STALE_MS)
            except Exception:  # the store is away: the next renewal retries, well within a claim's life
                log.warning("could not renew the turn of background response %s", plan.response_id)

    def _lost(self, run: _Run) -> None:
        """A reaper took the run over: it stores the turn, into the record index reserved for it, so this
        replica must not give that index back (the conversation's next turn would take it)."""
        log.warning("background response %s was taken over by another replica", run.plan.response_id)
        run.status = "lost"
        run.plan.reserved = False

    async def _finish(self, run: _Run, tail: list[dict[str, Any]], *, cancelled: bool = False) -> None:
        """Log all but the terminal event, store the turn, then log the terminal event and end the run."""
        translator, rid = run.translator, run.plan.response_id
        events = await self._log_ahead(run, run.pending + tail)
        if events is None:
            self._lost(run)
            return
        if cancelled:
            final = {**translator.incomplete("max_output_tokens"), "status": "cancelled"}
            final["incomplete_details"] = None
            last = max([e["sequence_number"] for e in events], default=-1)
            if last < 0:
                state = await self.store.read_run(run.plan.tenant, rid)
                last = state.last_seq if state is not None else -1
            terminal = ev.lifecycle(ev.TERMINAL_BY_STATUS["cancelled"], final)
            terminal["sequence_number"] = last + 1
            events.append(terminal)
        else:
            final = translator.final_response or translator.incomplete("max_output_tokens")
        run.status = str(final["status"])
        self.metrics.observe_usage(final.get("usage"))
        unstored = await save_quietly(
            lambda answer: record_response(
                self.store,
                run.plan,
                answer,
                idempotency_key=run.record.idempotency_key,
                request_hash=run.record.request_hash,
            ),
            final,
        )
        if unstored is not None and events:
            events[-1] = ev.unstored(events[-1], unstored)
        run.finished = await self.store.finish_run(
            rid, self.owner, str(final["status"]), numbered_events(events)
        )
        self._notify(rid)

    async def _log_ahead(self, run: _Run, events: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Before the turn is stored: log every event but the last (a reaper that takes the run over later
        logs only its terminal event, so the rest must be in the log already), and so renew the lease, so
        no reaper takes the run over while the turn is stored. What is left to log; None: the run is lost."""
        try:
            signal = await self.store.append_run_events(
                run.plan.response_id, self.owner, numbered_events(events[:-1]), LEASE_MS
            )
        except Exception:  # the store is away: storing the turn will say so; everything is logged at the end
            log.warning("could not log ahead for background response %s", run.plan.response_id)
            return events
        self._notify(run.plan.response_id)
        return events[-1:] if signal.owned else None

    async def close(self) -> None:
        """Shutting down: every run still going stores what it captured, `failed`."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _fields(plan: TurnPlan) -> dict[str, str]:
    """A run's structured log fields (sidecar/logs.py)."""
    return {"tenant": plan.tenant, "response_id": plan.response_id, "conversation_id": plan.conversation_id}


def numbered_events(events: list[dict[str, Any]]) -> list[tuple[int, bytes]]:
    return [(int(e["sequence_number"]), orjson.dumps(e)) for e in events]


async def _require_event_stream(engine: EngineAnswer) -> None:
    if engine.status < 400 and engine.content_type in ("text/event-stream", "application/octet-stream"):
        return
    body = await engine.read()
    if engine.status >= 400:
        raise engine_rejected(engine.status, body)
    raise UpstreamError("The engine answered a stream request with something that is not an event stream.")
