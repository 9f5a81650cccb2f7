"""One exception hierarchy; the error middleware renders each as an OpenAI error body and status."""

from __future__ import annotations

from typing import Any

import orjson


class ConvoStoreError(Exception):
    """Base error: carries everything the OpenAI error body needs."""

    status = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())


class InvalidRequest(ConvoStoreError):
    status = 400
    error_type = "invalid_request_error"


class MalformedRequestTarget(InvalidRequest):
    """A request target with dot segments, encoded slashes, backslashes or in absolute form: refused before
    routing, since the sidecar and the engine could read it as different paths."""

    code = "invalid_request_target"


class ContextLengthExceeded(InvalidRequest):
    """The prompt exceeds the model's `max_input_tokens` after the policy's folds (docs/api.md §7)."""

    code = "context_length_exceeded"

    def __init__(self, tokens: int, budget: int, *, alone: bool) -> None:
        what = "The new input alone" if alone else "The conversation"
        hint = "" if alone else ' Send truncation: "auto" to let the sidecar fold it into summaries.'
        super().__init__(
            f"{what} needs {tokens} input tokens, above this model's max_input_tokens of {budget}.{hint}",
            param="input",
        )


class RequestTimeout(InvalidRequest):
    """The client did not send its request body in time."""

    status = 408
    code = "request_timeout"


class ClientDisconnected(ConvoStoreError):
    """The client went away before its request was read or answered; nothing can be sent to it. 499 (nginx's
    "client closed request") keeps it apart from the sidecar's own failures in metrics."""

    status = 499
    error_type = "invalid_request_error"
    code = "client_disconnected"


class AuthenticationError(ConvoStoreError):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(ConvoStoreError):
    status = 404
    error_type = "invalid_request_error"


class VersionConflict(ConvoStoreError):
    status = 409
    error_type = "invalid_request_error"
    code = "version_conflict"


class IdempotencyConflict(ConvoStoreError):
    status = 409
    error_type = "invalid_request_error"
    code = "idempotency_key_reused"


class BodyTooLarge(ConvoStoreError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class UpstreamError(ConvoStoreError):
    """The engine was unreachable or answered something that is not a valid answer."""

    status = 502
    error_type = "server_error"
    code = "upstream_error"


class RateLimited(ConvoStoreError):
    """A rate limit (the engine's, passed on): 429 with `Retry-After`, so clients and gateways back off."""

    status = 429
    error_type = "requests"
    code = "rate_limit_exceeded"


class UpstreamTimeout(ConvoStoreError):
    status = 504
    error_type = "server_error"
    code = "upstream_timeout"


class StoreUnavailable(ConvoStoreError):
    status = 503
    error_type = "server_error"
    code = "store_unavailable"


class ShuttingDown(ConvoStoreError):
    """The sidecar is draining and past its deadline: the request was not started."""

    status = 503
    error_type = "server_error"
    code = "server_shutting_down"


def response_not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.")


def previous_response_not_found(response_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


def conversation_not_found(conversation_id: str) -> NotFound:
    return NotFound(f"Conversation with id '{conversation_id}' not found.")


def engine_rejected(status: int, body: bytes) -> ConvoStoreError:
    """An engine's error answer: its 4xx (the client's fault) keeps its status and message; anything
    else is a 502, since the engine failed."""
    message = body[:500].decode("utf-8", "replace") or f"HTTP {status}"
    param = code = None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        message = str(error.get("message") or message)
        # Strings or nothing, as the OpenAI error body has them (llama.cpp's code is the status, a number).
        param, code = (
            value if isinstance(value, str) else None for value in (error.get("param"), error.get("code"))
        )
    elif isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        message = parsed["error"]
    if 400 <= status < 500 and status not in (401, 403, 404, 408, 429):
        rejected: ConvoStoreError = InvalidRequest(message, param=param, code=code)
        rejected.status = status
        return rejected
    return UpstreamError(f"The engine answered {status}: {message}")
