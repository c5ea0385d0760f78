"""Who is asking and what they ask of the cache: tenant, namespace, Cache-Control.

A tenant is a salted hash of the caller's API key, never the key itself, so
keys never reach the store, the logs or the admin API.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from starlette.datastructures import Headers

from semcache.errors import RequestError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
ANONYMOUS = "t-anonymous"


@dataclass(frozen=True)
class CacheControls:
    tenant: str
    namespace: str | None
    category: str | None
    no_cache: bool  # skip the lookup, still store
    no_store: bool  # do not store the answer
    authorization: str | None


def tenant_of(authorization: str | None, salt: str) -> str:
    """``t-`` + 16 hex digits of sha256(salt, key); callers without a key share one tenant."""
    if not authorization:
        return ANONYMOUS
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else authorization.strip()
    if not key:
        return ANONYMOUS
    digest = hashlib.sha256(salt.encode() + b"\x00" + key.encode()).hexdigest()
    return "t-" + digest[:16]


def _checked_name(value: str | None, header: str) -> str | None:
    if value is None or value == "":
        return None
    if not _NAME.match(value):
        raise RequestError(f"{header} must be 1-64 characters of letters, digits and ._:-", param=header)
    return value


def parse_controls(headers: Headers, salt: str) -> CacheControls:
    directives = {d.strip().split("=", 1)[0].lower() for d in headers.get("cache-control", "").split(",")}
    authorization = headers.get("authorization")
    return CacheControls(
        tenant=tenant_of(authorization, salt),
        namespace=_checked_name(headers.get("x-semcache-namespace"), "X-Semcache-Namespace"),
        category=_checked_name(headers.get("x-semcache-category"), "X-Semcache-Category"),
        no_cache="no-cache" in directives,
        no_store="no-store" in directives,
        authorization=authorization,
    )
