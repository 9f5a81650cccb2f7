"""URL credentials are masked in every message, body and log line that shows a URL."""

from __future__ import annotations

import logging
import sys

import pytest

from sidecar.logs import JsonFormatter, TextFormatter
from sidecar.redact import mask_userinfo


@pytest.mark.parametrize(
    ("shown", "masked"),
    [
        ("redis://:s3cr3t@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:s3cr3t@cache:6380", "rediss://default:***@cache:6380"),
        ("http://s3cr3t@engine:8000/v1", "http://***@engine:8000/v1"),
        ("redis://:p@s3cr3t@host", "redis://:***@host"),
        ("redis://:s3#cr?et@host/0", "redis://:***@host/0"),
        (
            "cannot reach Redis at redis://u:s3cr3t@h:1/0: refused",
            "cannot reach Redis at redis://u:***@h:1/0: refused",
        ),
        ("'redis://:a@x' and 'http://b:s3cr3t@y/'", "'redis://:***@x' and 'http://b:***@y/'"),
    ],
)
def test_userinfo_is_masked(shown: str, masked: str) -> None:
    assert mask_userinfo(shown) == masked
    assert "s3cr3t" not in mask_userinfo(shown)


@pytest.mark.parametrize(
    "plain",
    ["memory://", "redis://127.0.0.1:6379/0", "http://engine/v1/models?user=a@b", "no url at all @ x"],
)
def test_urls_without_credentials_are_unchanged(plain: str) -> None:
    assert mask_userinfo(plain) == plain


def test_log_lines_mask_credentials_in_message_and_traceback() -> None:
    try:
        raise ConnectionError("lost redis://:s3cr3t@h:1")
    except ConnectionError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "convostore", logging.ERROR, __file__, 1, "at %s", ("http://u:s3cr3t@e",), exc_info
    )
    for formatter in (JsonFormatter(), TextFormatter("%(message)s")):
        line = formatter.format(record)
        assert "s3cr3t" not in line and "***" in line
