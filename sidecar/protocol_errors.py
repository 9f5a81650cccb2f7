"""Requests aiohttp's HTTP parser refuses before any handler runs (a header line over 8 KiB, a bad
Content-Length, bytes that are not HTTP) get the OpenAI error body every other refusal gets, and one log
line instead of a traceback: a client can send these at will, and they must not flood the logs."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger("convostore.http")


def protocol_error_body(status: int, exc: BaseException | None) -> bytes:
    """The OpenAI error body for a request the HTTP parser refused (or, at 500, one that broke it)."""
    if status >= 500:
        kind, message = "server_error", "The server had an error while processing the request."
    else:
        kind, message = "invalid_request_error", _reason(exc)
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})


def _reason(exc: BaseException | None) -> str:
    # The parser's own messages quote the offending bytes: the answer need not echo them.
    if isinstance(exc, LineTooLong):
        return "The request line or a header line is too long (the limit is 8190 bytes)."
    if isinstance(exc, BadHttpMethod):
        return "The request is not a valid HTTP request: unknown method."
    if isinstance(exc, HttpProcessingError) and exc.message:
        return f"The request is not a valid HTTP request: {exc.message.splitlines()[0].rstrip(':')}."
    return "The request is not a valid HTTP request."


class _JSONErrorRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # part of an answer went out: the connection is broken
            raise ConnectionError("Response is sent already, cannot send another response with the error")
        if status >= 500:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
        else:
            log.info("refused a malformed request from %s: %s", request.remote, _reason(exc))
        response = web.Response(
            status=status, body=protocol_error_body(status, exc), content_type="application/json"
        )
        response.force_close()
        return response


class _JSONErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JSONErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JSONErrorAppRunner(web.AppRunner):
    """web.AppRunner whose connections answer parser-level refusals with the OpenAI error body."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JSONErrorServer  # aiohttp has no setting for the handler class
        return server
