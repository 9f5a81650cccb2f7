"""Checks a `POST /v1/responses` body and builds what the engine receives (pure, bytes-level)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..api_limits import INCLUDABLE, METADATA_KEY_CHARS, METADATA_PAIRS, METADATA_VALUE_CHARS
from ..appkeys import STORE, UPSTREAM
from ..context.packs import PACK_HEADER
from ..errors import InvalidRequest
from ..ids import validate_client_id
from ..turns import TurnPlan
from ..wire.items import parse_input

# Fields the sidecar acts on itself; everything else goes to the engine as the client sent it.
SIDECAR_FIELDS = frozenset(
    {"input", "previous_response_id", "conversation", "background", "metadata", "store", "stream"}
)


@dataclass(frozen=True, slots=True)
class CreateRequest:
    body: dict[str, Any]
    items: list[dict[str, Any]]
    previous_response_id: str | None
    conversation_id: str | None
    stream: bool
    store: bool
    model: str
    truncation: str = "disabled"  # "auto": fold and drop summaries to fit max_input_tokens (docs/api.md §7)

    @property
    def history_param(self) -> str:
        """The parameter that named the history: an error about what is stored in it names this."""
        return "conversation" if self.conversation_id else "previous_response_id"


def parse_create(body: dict[str, Any]) -> CreateRequest:
    for name in ("stream", "store", "background"):
        if name in body and body[name] is not None and not isinstance(body[name], bool):
            raise InvalidRequest(f"Invalid type for '{name}': expected a boolean.", param=name)
    model = body.get("model", "")
    if not isinstance(model, str):
        raise InvalidRequest("Invalid type for 'model': expected a string.", param="model")
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise InvalidRequest("Invalid type for 'instructions': expected a string.", param="instructions")
    check_metadata(body.get("metadata"))
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise InvalidRequest(
            "Invalid type for 'previous_response_id': expected a string.", param="previous_response_id"
        )
    conversation = _conversation_id(body.get("conversation"))
    if previous and conversation:
        raise InvalidRequest(
            "Mutually exclusive parameters: provide only one of 'previous_response_id' or 'conversation'.",
            param="conversation",
        )
    if "input" not in body and not (previous or conversation):
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    items = parse_input(body.get("input", []))
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        raise InvalidRequest("Invalid type for 'tools': expected an array.", param="tools")
    check_include(body.get("include"))
    store = body.get("store")
    truncation = body.get("truncation")
    if truncation is not None and truncation not in ("auto", "disabled"):
        raise InvalidRequest(
            f"Invalid value for 'truncation': {truncation!r}; expected 'auto' or 'disabled'.",
            param="truncation",
            code="invalid_value",
        )
    return CreateRequest(
        body=body,
        items=items,
        previous_response_id=previous,
        conversation_id=conversation,
        stream=bool(body.get("stream")),
        store=True if store is None else store,
        model=model,
        truncation=truncation or "disabled",
    )


def _conversation_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
    return validate_client_id(value, "conversation")


def check_include(include: Any) -> None:
    if include is None:
        return
    if not isinstance(include, list):
        raise InvalidRequest("Invalid type for 'include': expected an array of strings.", param="include")
    for i, value in enumerate(include):
        if not isinstance(value, str) or value not in INCLUDABLE:
            raise InvalidRequest(
                f"Invalid value for 'include[{i}]': {value!r}. Supported values are: "
                + ", ".join(f"'{v}'" for v in sorted(INCLUDABLE))
                + ".",
                param=f"include[{i}]",
                code="invalid_value",
            )


def check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > METADATA_PAIRS:
        raise InvalidRequest(
            f"Invalid 'metadata': expected an object of at most {METADATA_PAIRS} pairs.", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS or not isinstance(value, str) or len(value) > METADATA_VALUE_CHARS:
            raise InvalidRequest(
                f"Invalid 'metadata.{key}': keys are at most {METADATA_KEY_CHARS} characters, values strings "
                f"of at most {METADATA_VALUE_CHARS}.",
                param="metadata",
            )


def responses_engine_body(body: dict[str, Any], items: list[bytes], *, stream: bool) -> bytes:
    """The engine's request: the client's own fields, then the whole history as `input`, spliced from
    stored bytes. Never `previous_response_id`: the engine needs no state. `store: false` keeps an engine
    that can store from keeping a second copy."""
    rest = {k: v for k, v in body.items() if k not in SIDECAR_FIELDS}
    rest["store"] = False
    rest["stream"] = stream
    opening, closing = orjson.dumps(rest)[:-1] + b',"input":[', b"]}"
    if len(items) < 2:
        return b"".join([opening, *items, closing])
    # One join copies the history once (concatenating the parts copied it three times); only the first and
    # last items are copied twice, to carry the brackets.
    return b",".join([opening + items[0], *items[1:-1], items[-1] + closing])


def prompt_inputs(request: web.Request, create: CreateRequest, plan: TurnPlan) -> dict[str, Any]:
    """What a create call's prompt is built from, for the turn itself and for `input_tokens`/`compact`
    alike, so that a count is of exactly what the turn sends."""
    return {
        "model": create.model,
        "pack_header": request.headers.get(PACK_HEADER),
        "upstream": request.app[UPSTREAM],
        "history": plan.history,
        "new_input": [b for _, b in plan.input_items],
        "instructions": create.body.get("instructions"),
        "request_tools": create.body.get("tools"),
        "truncation": create.truncation,
        "tenant": plan.tenant,  # compaction items in the input or history are verified for this tenant
        "store": request.app[STORE],  # stored summaries (upstream/http summarisers)
        "summaries": plan.summaries,  # those the resolve brought
        "history_param": create.history_param,
    }
