"""The policy file's one schema (docs/api.md §9): every key checked, each problem named by its path."""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from .ids import is_client_id
from .passthrough_routes import ALL, INFERENCE, route_problem

Check = Callable[[Any, str], None]

SUMMARISERS = ("template", "upstream", "http")
FEW_SHOT_ROLES = ("system", "developer", "user", "assistant")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class PolicyError(ValueError):
    """One problem in the policy file: `where` is its dotted path ('' for the top level)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


def validate_policy(data: Any) -> dict[str, Any]:
    """The policy as read from YAML, checked whole against the schema; the first problem raises."""
    if data is None:
        return {}
    _fields(data, "", _TOP)
    policy: dict[str, Any] = data
    packs = policy.get("packs") or {}
    for name, spec in (policy.get("policies") or {}).items():
        pack = spec.get("pack")
        if pack is not None and pack not in packs:
            raise PolicyError(f"policies.{name}.pack", f"no pack named {pack!r} under 'packs'")
        if spec.get("summariser") == "http" and not spec.get("summariser_url"):
            raise PolicyError(f"policies.{name}.summariser_url", "required when summariser is 'http'")
    _keys_unique(policy.get("tenants") or {})
    return policy


# -- the schema ---------------------------------------------------------------------------------------------


def _fields(value: Any, where: str, schema: Mapping[str, Check]) -> None:
    """A mapping holding only the keys of `schema`, each checked by its own rule."""
    _mapping(value, where)
    for key, item in value.items():
        check = schema.get(key)
        if check is None:
            raise PolicyError(where, _unknown(key, schema))
        check(item, _join(where, key))


def _named(schema: Mapping[str, Check], name_check: Check | None = None) -> Check:
    """A mapping of names (packs, policies, tenants) to objects that follow `schema`; null means empty."""

    def check(value: Any, where: str) -> None:
        if value is None:
            return
        _mapping(value, where)
        for name, spec in value.items():
            (name_check or _name)(name, where)
            _fields({} if spec is None else spec, _join(where, name), schema)

    return check


def _mapping(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise PolicyError(where, f"must be a mapping, not {_kind(value)}")


def _name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not name:
        raise PolicyError(where, f"names must be non-empty strings, not {name!r}")


def _tenant_name(name: Any, where: str) -> None:
    """A tenant's name is part of its keys and records, as X-Tenant-Id's value is: the same characters."""
    if not isinstance(name, str) or not is_client_id(name):
        raise PolicyError(where, f"tenant names must be 1-128 characters of [A-Za-z0-9_.-], not {name!r}")


def _string(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise PolicyError(where, f"must be a string, not {_kind(value)}")


def _optional_string(value: Any, where: str) -> None:
    if value is not None:
        _string(value, where)


def _path(value: Any, where: str) -> None:
    _string(value, where)
    if not value:
        raise PolicyError(where, "must be a file path, not empty")


def _positive_int(value: Any, where: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PolicyError(where, f"must be an integer ≥ 1, not {value!r}")


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any, where: str) -> None:
        if value not in choices:
            raise PolicyError(where, f"must be one of {', '.join(choices)}, not {value!r}")

    return check


def _list_of(item: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise PolicyError(where, f"must be a list, not {_kind(value)}")
        for n, element in enumerate(value):
            item(element, f"{where}[{n}]")

    return check


def _api_key(value: Any, where: str) -> None:
    _string(value, where)
    if not value.strip():
        raise PolicyError(where, "must not be empty")


def _key_digest(value: Any, where: str) -> None:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise PolicyError(where, "must be a SHA-256 digest (64 hex characters)")


def _tool(value: Any, where: str) -> None:
    _mapping(value, where)
    if not isinstance(value.get("type"), str):
        raise PolicyError(f"{where}.type", "a tool needs a 'type' (e.g. function)")


def _few_shot_message(value: Any, where: str) -> None:
    _fields(value, where, {"role": _one_of(FEW_SHOT_ROLES), "content": _string})
    for required in ("role", "content"):
        if required not in value:
            raise PolicyError(where, f"missing '{required}'")


_PACK: dict[str, Check] = {
    "system": _string,
    "few_shot": _list_of(_few_shot_message),
    "tools": _list_of(_tool),
}
_POLICY: dict[str, Check] = {
    "keep_last_turns": _positive_int,
    "summary_every_turns": _positive_int,
    "max_input_tokens": _positive_int,
    "summariser": _one_of(SUMMARISERS),
    "summariser_url": _optional_string,
    "pack": _optional_string,
}
_QUOTA: dict[str, Check] = {
    "requests_per_minute": _positive_int,
    "stored_bytes": _positive_int,
    "conversations": _positive_int,
    "background_responses": _positive_int,  # running at once; unset = unlimited
}
_TENANT: dict[str, Check] = {
    "api_keys": _list_of(_api_key),
    "api_key_sha256": _list_of(_key_digest),
    "quota": lambda value, where: _fields(value, where, _QUOTA),
}


def _tokenizers(value: Any, where: str) -> None:
    if value is None:
        return
    _mapping(value, where)
    for model, path in value.items():
        _name(model, where)
        _path(path, _join(where, model))


# Compaction tokens are signed with this key; every replica needs the same one (docs/api.md §9).
COMPACTION_KEY_MIN_BYTES = 32


def _compaction_key(value: Any, where: str) -> None:
    _string(value, where)
    if len(value.encode()) < COMPACTION_KEY_MIN_BYTES:
        raise PolicyError(where, f"must be at least {COMPACTION_KEY_MIN_BYTES} bytes (a random secret)")


def _compaction(value: Any, where: str) -> None:
    if value is None:
        return
    _fields(value, where, {"key": _compaction_key, "key_file": _path})
    if "key" in value and "key_file" in value:
        raise PolicyError(where, "set one of 'key' or 'key_file', not both")


def _passthrough_route(value: Any, where: str) -> None:
    problem = route_problem(value)
    if problem is not None:
        raise PolicyError(where, problem)


def _passthrough(value: Any, where: str) -> None:
    if value is None or value in (ALL, INFERENCE):
        return
    if isinstance(value, str):
        raise PolicyError(where, f"must be '{ALL}', '{INFERENCE}' or a list of routes, not {value!r}")
    _list_of(_passthrough_route)(value, where)


_TOP: dict[str, Check] = {
    "packs": _named(_PACK),
    "policies": _named(_POLICY),
    "tokenizers": _tokenizers,
    "tenants": _named(_TENANT, _tenant_name),
    "compaction": _compaction,
    "passthrough": _passthrough,
}


# -- cross-checks and wording -------------------------------------------------------------------------------


def _keys_unique(tenants: Mapping[str, Any]) -> None:
    """One key, one tenant: a key listed twice would silently belong to whichever tenant came last."""
    owner: dict[str, str] = {}
    for tenant, spec in tenants.items():
        spec = spec or {}
        keys = enumerate(spec.get("api_keys") or [])
        digests = enumerate(spec.get("api_key_sha256") or [])
        keyed = [(f"api_keys[{n}]", hashlib.sha256(key.encode()).hexdigest()) for n, key in keys]
        keyed += [(f"api_key_sha256[{n}]", digest.lower()) for n, digest in digests]
        for field, digest in keyed:
            if digest in owner and owner[digest] != tenant:
                raise PolicyError(f"tenants.{tenant}.{field}", f"the same key as tenant {owner[digest]!r}")
            owner[digest] = tenant


def _unknown(key: Any, schema: Mapping[str, Check]) -> str:
    known = ", ".join(schema)
    close = difflib.get_close_matches(str(key), list(schema), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f" (expected {known})"
    return f"unknown key '{key}'{hint}"


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
