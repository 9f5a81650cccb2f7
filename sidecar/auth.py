"""Who is calling: the tenant of a request, by API key, by a trusted gateway header, or the default one."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from multidict import MultiMapping

from .errors import AuthenticationError, InvalidRequest
from .ids import is_client_id

DEFAULT_TENANT = "default"


class Authenticator:
    def __init__(self, mode: str, tenants: Mapping[str, Any]) -> None:
        self._mode = mode
        # Keys are compared by SHA-256 so plain and hashed keys in the policy file work alike.
        self._tenant_by_key_hash: dict[str, str] = {}
        for tenant, spec in tenants.items():
            for key in (spec or {}).get("api_keys", []) or []:
                self._tenant_by_key_hash[hashlib.sha256(str(key).encode()).hexdigest()] = tenant
            for digest in (spec or {}).get("api_key_sha256", []) or []:
                self._tenant_by_key_hash[str(digest).lower()] = tenant

    def tenant_for(self, headers: MultiMapping[str]) -> str:
        if self._mode == "none":
            return DEFAULT_TENANT
        if self._mode == "trusted_header":
            tenant = _single(headers, "X-Tenant-Id")
            if not tenant or not is_client_id(tenant):
                raise AuthenticationError("Missing or invalid X-Tenant-Id header.", code="missing_tenant")
            return tenant
        key = _bearer(_single(headers, "Authorization"))
        if key is None:
            raise AuthenticationError("You didn't provide an API key.", code="missing_api_key")
        # Header bytes that are not UTF-8 reach us as surrogate escapes: hashed as the bytes they were (a key
        # no tenant has, so a 401), never a 500.
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        for known, tenant in self._tenant_by_key_hash.items():
            if hmac.compare_digest(known, digest):
                return tenant
        raise AuthenticationError("Incorrect API key provided.")


def _single(headers: MultiMapping[str], name: str) -> str:
    """The header's one value ('' if absent). Two values are refused: the gateway and whatever sits behind
    it could each pick a different one, and so act for different tenants."""
    values = headers.getall(name, [])
    if len(values) > 1:
        raise InvalidRequest(f"The {name} header must be sent once.", param=name, code="duplicate_header")
    return values[0] if values else ""


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
