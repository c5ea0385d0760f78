"""Who is asking and what they ask of the cache: tenant, namespace, Cache-Control.

A tenant is a salted hash of the caller's API key, never the key itself, so
keys never reach the store, the logs or the admin API. The hash covers the
exact ``Authorization`` header the caller sent, the one the upstream judges:
``Bearer k``, ``bearer k``, ``Bearer  k`` and ``k`` are four tenants, so a
key check the upstream passed for one spelling never vouches for another
(issue #14, item 9).

A caller presenting the admin token in ``X-Semcache-Admin-Token`` is the
tenant ``admin`` (:data:`ADMIN_TENANT`): the one identity that may, by
default, write into a category's shared namespace.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from starlette.datastructures import Headers

from semcache.errors import RequestError
from semcache.config.policy import ADMIN_WRITER

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
ANONYMOUS = "t-anonymous"
ADMIN_TENANT = ADMIN_WRITER  # the policy's name for it
_CANONICAL = re.compile(r"Bearer ([^\s]+)")


@dataclass(frozen=True)
class CacheControls:
    tenant: str
    namespace: str | None
    category: str | None
    no_cache: bool  # skip the lookup, still store
    no_store: bool  # do not store the answer
    authorization: str | None


def tenant_of(authorization: str | None, salt: str) -> str:
    """``t-`` + 16 hex digits of a salted sha256 of the exact header; no header: one shared tenant.

    The canonical ``Bearer KEY`` hashes KEY alone (the ids tenants had before);
    any other spelling hashes the whole header under a different tag, so it can
    never collide with a canonical one.
    """
    if authorization is None or authorization == "":
        return ANONYMOUS
    canonical = _CANONICAL.fullmatch(authorization)
    material = canonical.group(1).encode() if canonical else b"raw\x00" + authorization.encode()
    digest = hashlib.sha256(salt.encode() + b"\x00" + material).hexdigest()
    return "t-" + digest[:16]


def is_admin(presented: str | None, admin_token: str | None) -> bool:
    """Whether ``presented`` is the admin token (constant-time; never with no token configured)."""
    if not admin_token or not presented:
        return False
    return hmac.compare_digest(presented.encode(), admin_token.encode())


def _checked_name(value: str | None, header: str) -> str | None:
    if value is None or value == "":
        return None
    if not _NAME.match(value):
        raise RequestError(f"{header} must be 1-64 characters of letters, digits and ._:-", param=header)
    return value


def parse_controls(headers: Headers, salt: str, admin_token: str | None = None) -> CacheControls:
    directives = {d.strip().split("=", 1)[0].lower() for d in headers.get("cache-control", "").split(",")}
    authorization = headers.get("authorization")
    admin = is_admin(headers.get("x-semcache-admin-token"), admin_token)
    return CacheControls(
        tenant=ADMIN_TENANT if admin else tenant_of(authorization, salt),
        namespace=_checked_name(headers.get("x-semcache-namespace"), "X-Semcache-Namespace"),
        category=_checked_name(headers.get("x-semcache-category"), "X-Semcache-Category"),
        no_cache="no-cache" in directives,
        no_store="no-store" in directives,
        authorization=authorization,
    )
