"""Who is calling, as the gateway says: the monolith trusts only these two headers.

    X-User-Id      the caller's *username* (e.g. "alice"), not the numeric users.id: the
                   gateway knows users by the token's subject and never sees our ids
    X-User-Roles   comma-separated roles, e.g. "admin,customer"

The gateway strips both from incoming requests and sets them after authentication; the
monolith must never be reachable except through it.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import Headers

from legacy_monolith.errors import ApiError


@dataclass(frozen=True)
class Identity:
    username: str | None
    roles: frozenset[str]

    @classmethod
    def from_headers(cls, headers: Headers) -> Identity:
        username = headers.get("x-user-id", "").strip() or None
        roles = frozenset(r.strip() for r in headers.get("x-user-roles", "").split(",")) - {""}
        return cls(username, roles)

    def require_user(self) -> str:
        if self.username is None:
            raise ApiError(401, "unauthenticated", "an X-User-Id header is required")
        return self.username

    def require_role(self, role: str) -> None:
        self.require_user()
        if role not in self.roles:
            raise ApiError(403, "forbidden", f"the {role!r} role is required")
