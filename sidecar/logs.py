"""Structured logs on stderr: JSON lines with request, trace, tenant, conversation and response ids."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from .redact import mask_userinfo
from .tracing import current_trace_id

_CONTEXT_FIELDS = (
    "request_id",
    "trace_id",
    "tenant",
    "conversation_id",
    "response_id",
    "route",
    "status",
    "duration_ms",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; URLs in the message and traceback have their credentials masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask_userinfo(record.getMessage()),
        }
        if not hasattr(record, "trace_id"):
            # Lines logged while a request runs belong to its trace (formatting runs in the logging call).
            record.trace_id = current_trace_id()
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = mask_userinfo(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    """Plain lines for people, with URL credentials masked like the JSON ones."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_userinfo(super().format(record))


def configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
