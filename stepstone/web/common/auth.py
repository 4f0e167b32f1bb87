"""Who is calling, and may they: Bearer tokens, legacy email + key pairs, the admin token.

Read endpoints (GET) accept any of Cloudflare's three groups; everything else needs
``Workers Scripts Write``. A token limited to accounts is refused (403) for any other account.
The legacy ``X-Auth-Key`` (with ``X-Auth-Email``, which is informational) and
``X-Auth-User-Service-Key`` carry a token secret, so one credential store serves all schemes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from stepstone import auth as tokens
from stepstone.errors import Forbidden, StepstoneError, Unauthorized
from stepstone.ops import Queries


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How the API authenticates.

    Attributes:
        admin_token: a secret accepted with every permission for every account (for
            automation); defaults to env ``STEPSTONE_ADMIN_TOKEN``.
    """

    admin_token: str | None = None

    @classmethod
    def from_env(cls) -> AuthSettings:
        return cls(admin_token=os.environ.get(tokens.ADMIN_TOKEN_ENV) or None)


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    permissions: frozenset[str]
    accounts: tuple[str, ...] | None
    # The token's id (None for the admin token and with auth off): the audit log records it.
    id: str | None = None

    def may_see(self, account_id: str) -> bool:
        return self.accounts is None or account_id in self.accounts


ADMIN = Principal("admin", frozenset(tokens.PERMISSIONS), None)
NOBODY_NEEDED = Principal("insecure-no-auth", frozenset(tokens.PERMISSIONS), None)


def credential(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return ""
        return value.strip()
    return headers.get("x-auth-key") or headers.get("x-auth-user-service-key")


async def authenticate(
    ops: Queries, settings: AuthSettings, headers: Mapping[str, str]
) -> Principal:
    secret = credential(headers)
    if secret is None:
        raise Unauthorized("no credentials: send Authorization: Bearer <token>")
    if not secret:
        raise Unauthorized("the Authorization header must read: Bearer <token>")
    if tokens.matches_admin(secret, settings.admin_token):
        return ADMIN
    record = await ops.token(secret)
    if record is None:
        raise Unauthorized("the token is unknown or revoked")
    return Principal(record.name, frozenset(record.permissions), record.accounts, record.id)


def authorize(principal: Principal, *, write: bool, account_id: str | None) -> None:
    needed = tokens.WRITE_GROUPS if write else tokens.READ_GROUPS
    if not principal.permissions & needed:
        wanted = " or ".join(sorted(needed))
        raise Forbidden(f"this endpoint needs the permission {wanted}")
    if account_id is not None and not principal.may_see(account_id):
        raise Forbidden(f"the token is not valid for account {account_id!r}")


async def check(
    ops: Queries,
    settings: AuthSettings,
    headers: Mapping[str, str],
    *,
    write: bool,
    account_id: str | None,
) -> Principal | StepstoneError:
    try:
        principal = await authenticate(ops, settings, headers)
        authorize(principal, write=write, account_id=account_id)
    except StepstoneError as exc:
        return exc
    return principal
