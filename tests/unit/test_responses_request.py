"""A `POST /v1/responses` body is checked before anything else happens."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.errors import InvalidRequest
from sidecar.handlers.responses_request import INCLUDABLE, parse_create


def test_every_includable_value_the_api_defines_is_accepted() -> None:
    from typing import get_args

    from openai.types.responses import ResponseIncludable

    assert set(get_args(ResponseIncludable)) == INCLUDABLE
    assert parse_create({"model": "m", "input": "x", "include": sorted(INCLUDABLE)}).body["include"]


@pytest.mark.parametrize(
    ("include", "param"),
    [
        (["reasoning.encrypted_content", "reasoning.encrypted"], "include[1]"),
        ([{"x": 1}], "include[0]"),
        ("reasoning.encrypted_content", "include"),
    ],
)
def test_an_unknown_include_is_a_400_naming_it(include: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_create({"model": "m", "input": "x", "include": include})
    assert refused.value.param == param
