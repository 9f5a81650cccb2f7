"""The benchmark's engine: answers `/v1/responses` at once, whole or as a stream of a fixed number of deltas.

    python -m bench.engine --port N [--deltas 8]

It is a stateless Responses engine like llama.cpp's: it ignores `previous_response_id`, mints unique
`resp_`/`msg_` ids per call and answers a fixed ~200-byte text. It parses the body (as a real engine must) and
does nothing else, so the time it takes is the floor every proxy is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import time
from typing import Any

import orjson
from aiohttp import web

ANSWER = ("The quick brown fox jumps over the lazy dog while the benchmark counts milliseconds. " * 3)[:200]


class Engine:
    def __init__(self, deltas: int) -> None:
        self.deltas = deltas
        # pid + counter: unique across calls and across engine restarts within one run
        self._ids = (f"{os.getpid():06x}{n:018x}" for n in itertools.count())
        size = -(-len(ANSWER) // deltas)
        self.pieces = [ANSWER[i : i + size] for i in range(0, len(ANSWER), size)]

    def _response(self, body: dict[str, Any], resp_id: str, status: str, output: list[Any]) -> dict[str, Any]:
        now = int(time.time())
        return {
            "id": resp_id,
            "object": "response",
            "created_at": now,
            "completed_at": now if status == "completed" else None,
            "model": str(body.get("model") or "bench-model"),
            "status": status,
            "output": output,
            "usage": {
                "input_tokens": 64,
                "output_tokens": 50,
                "total_tokens": 114,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":  # health probes (/health, /v1/models, ...)
            return web.Response(
                body=b'{"object":"list","data":[{"id":"bench-model","object":"model"}]}',
                content_type="application/json",
            )
        body = orjson.loads(await request.read())
        serial = next(self._ids)
        resp_id, msg_id = f"resp_{serial}", f"msg_{serial}"
        part = {"type": "output_text", "text": ANSWER, "annotations": [], "logprobs": []}
        item = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [part],
        }
        if not body.get("stream"):
            return web.Response(
                body=orjson.dumps(self._response(body, resp_id, "completed", [item])),
                content_type="application/json",
            )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        seq = itertools.count()

        async def send(kind: str, **fields: Any) -> None:
            data = orjson.dumps({"type": kind, "sequence_number": next(seq), **fields})
            await response.write(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")

        head = self._response(body, resp_id, "in_progress", [])
        await send("response.created", response=head)
        await send("response.in_progress", response=head)
        added = {**item, "status": "in_progress", "content": []}
        await send("response.output_item.added", output_index=0, item=added)
        empty = {**part, "text": ""}
        await send("response.content_part.added", output_index=0, content_index=0, item_id=msg_id, part=empty)
        for piece in self.pieces:
            await send(
                "response.output_text.delta",
                output_index=0,
                content_index=0,
                item_id=msg_id,
                delta=piece,
                logprobs=[],
            )
        await send(
            "response.output_text.done",
            output_index=0,
            content_index=0,
            item_id=msg_id,
            text=ANSWER,
            logprobs=[],
        )
        await send("response.content_part.done", output_index=0, content_index=0, item_id=msg_id, part=part)
        await send("response.output_item.done", output_index=0, item=item)
        await send("response.completed", response=self._response(body, resp_id, "completed", [item]))
        await response.write_eof()
        return response


async def serve(port: int, deltas: int) -> None:
    server = web.Server(Engine(deltas).handle, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deltas", type=int, default=8)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port, args.deltas))


if __name__ == "__main__":
    main()
