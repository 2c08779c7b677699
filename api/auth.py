"""Bearer JWTs for /api (HS256): who the caller is, whether they are an admin, what they may watch.

Claims: `sub`, `exp`, `roles` (list; "admin" may write the registry) and `entitlements` (list;
"premium" or a stream id opens premium streams).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jwt
from fastapi import HTTPException, Request

ALGORITHM = "HS256"


@dataclass(frozen=True)
class Principal:
    sub: str
    roles: frozenset[str] = field(default_factory=frozenset)
    entitlements: frozenset[str] = field(default_factory=frozenset)

    @property
    def admin(self) -> bool:
        return "admin" in self.roles

    def entitled_to(self, stream_id: str) -> bool:
        return "premium" in self.entitlements or stream_id in self.entitlements


def mint_jwt(secret: str, sub: str, *, roles: list[str] | None = None, entitlements: list[str] | None = None,
             ttl_s: int = 3600, now: float | None = None) -> str:
    now = time.time() if now is None else now
    claims = {"sub": sub, "iat": int(now), "exp": int(now) + ttl_s,
              "roles": roles or [], "entitlements": entitlements or []}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_jwt(secret: str, token: str) -> Principal:
    """Raise HTTPException(401) for anything that is not a valid, unexpired token of ours."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError as exc:
        raise HTTPException(401, f"invalid bearer token: {exc}", headers={"WWW-Authenticate": "Bearer"}) from exc
    roles = claims.get("roles") or []
    ents = claims.get("entitlements") or []
    if not isinstance(roles, list) or not isinstance(ents, list):
        raise HTTPException(401, "invalid bearer token: roles/entitlements must be lists")
    return Principal(str(claims["sub"]), frozenset(map(str, roles)), frozenset(map(str, ents)))


def principal_of(request: Request) -> Principal | None:
    """The caller, or None when no Authorization header was sent."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "use Authorization: Bearer <jwt>", headers={"WWW-Authenticate": "Bearer"})
    return decode_jwt(request.app.state.ctx.settings.jwt_secret, token.strip())


def require_admin(request: Request) -> Principal:
    principal = principal_of(request)
    if principal is None:
        raise HTTPException(401, "admin bearer token required", headers={"WWW-Authenticate": "Bearer"})
    if not principal.admin:
        raise HTTPException(403, "admin role required")
    return principal
