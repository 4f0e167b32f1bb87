"""API tokens: Cloudflare's permission groups, optionally limited to accounts, stored hashed.

A token's secret reads ``stp_<token id>_<random>``. Only the SHA-256 of the secret is stored, so a
leaked database reveals no usable token; a request is matched by looking the hash up and then
comparing the embedded id in constant time. The secret is shown once, when created.

The API remembers a verified token for ``VERIFIED_FOR_SECONDS`` (see ``verify_recent``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stepstone.errors import InvalidRequest
from stepstone.storage.base import Storage, TokenRecord

SCRIPTS_READ = "Workers Scripts Read"
SCRIPTS_WRITE = "Workers Scripts Write"
TAIL_READ = "Workers Tail Read"
PERMISSIONS: tuple[str, ...] = (SCRIPTS_READ, SCRIPTS_WRITE, TAIL_READ)
READ_GROUPS = frozenset(PERMISSIONS)
WRITE_GROUPS = frozenset({SCRIPTS_WRITE})
ADMIN_TOKEN_ENV = "STEPSTONE_ADMIN_TOKEN"
ADMIN_TOKEN_FILE = "admin-token"
_PREFIX = "stp_"
# How long the API trusts a verified token without asking the database again: a client that
# polls costs one lookup per token per interval instead of one per request. A revocation by
# this process (``revoke_token``) takes effect at once; one by another process (``stepstone
# tokens revoke``, another server on the same database) within this interval.
VERIFIED_FOR_SECONDS = 0.5
_VERIFIED_MAX = 1024


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _token_id(secret: str) -> str | None:
    if not secret.startswith(_PREFIX):
        return None
    parts = secret[len(_PREFIX) :].split("_", 1)
    return parts[0] if len(parts) == 2 else None


def check_permissions(permissions: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(permissions))
    if not chosen:
        raise InvalidRequest(f"a token needs at least one permission of {list(PERMISSIONS)}")
    unknown = [p for p in chosen if p not in PERMISSIONS]
    if unknown:
        raise InvalidRequest(f"unknown permissions {unknown}; choose from {list(PERMISSIONS)}")
    return chosen


async def create_token(
    storage: Storage, *, name: str, permissions: list[str], accounts: list[str] | None
) -> tuple[TokenRecord, str]:
    """Store a new token; return its record and its secret (the only time it is shown)."""
    token_id = uuid.uuid4().hex
    secret = f"{_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    record = await _store(storage, token_id, secret, name, permissions, accounts)
    return record, secret


async def _store(
    storage: Storage,
    token_id: str,
    secret: str,
    name: str,
    permissions: Sequence[str],
    accounts: Sequence[str] | None,
) -> TokenRecord:
    if not name or len(name) > 255:
        raise InvalidRequest("a token name has 1 to 255 characters")
    if accounts is not None and not accounts:
        raise InvalidRequest("accounts, when given, lists at least one account id")
    record = TokenRecord(
        id=token_id,
        name=name,
        permissions=check_permissions(permissions),
        accounts=None if accounts is None else tuple(dict.fromkeys(accounts)),
        created_on=int(time.time() * 1000),
        revoked_on=None,
    )
    await storage.create_token(record, hash_secret(secret))
    return record


async def list_tokens(storage: Storage) -> list[TokenRecord]:
    return await storage.list_tokens()


async def revoke_token(storage: Storage, token_id: str) -> bool:
    revoked = await storage.revoke_token(token_id, int(time.time() * 1000))
    _recent(storage).forget_all()
    return revoked


async def verify_secret(storage: Storage, secret: str) -> TokenRecord | None:
    """The live token whose secret this is, or None."""
    token_id = _token_id(secret)
    if token_id is None:
        return None
    record = await storage.find_token(hash_secret(secret))
    if record is None or not hmac.compare_digest(record.id.encode(), token_id.encode()):
        return None
    return record


@dataclass
class _Verified:
    """Tokens of one store verified lately: secret hash -> (record, trusted until)."""

    records: dict[str, tuple[TokenRecord, float]] = field(default_factory=dict)
    # Bumped by every revocation, so a lookup that began before one is not remembered.
    generation: int = 0

    def forget_all(self) -> None:
        self.records.clear()
        self.generation += 1


_verified: weakref.WeakKeyDictionary[Storage, _Verified] = weakref.WeakKeyDictionary()


def _recent(storage: Storage) -> _Verified:
    recent = _verified.get(storage)
    if recent is None:
        recent = _verified[storage] = _Verified()
    return recent


async def verify_recent(storage: Storage, secret: str) -> TokenRecord | None:
    """``verify_secret``, reusing a verification younger than ``VERIFIED_FOR_SECONDS``.

    Only live tokens are remembered: a secret that fails is looked up again every time, so a
    token created a moment ago works at once and guessed secrets fill nothing.
    """
    recent = _recent(storage)
    digest = hash_secret(secret)
    now = time.monotonic()
    hit = recent.records.get(digest)
    if hit is not None and hit[1] > now:
        return hit[0]
    generation = recent.generation
    record = await verify_secret(storage, secret)
    if record is None:
        recent.records.pop(digest, None)
    elif generation == recent.generation:
        if len(recent.records) >= _VERIFIED_MAX:
            recent.records.clear()
        recent.records[digest] = (record, now + VERIFIED_FOR_SECONDS)
    return record


def matches_admin(secret: str, admin_secret: str | None) -> bool:
    return admin_secret is not None and hmac.compare_digest(
        hash_secret(secret).encode(), hash_secret(admin_secret).encode()
    )


async def ensure_admin_token(storage: Storage, data_dir: Path) -> tuple[str, bool]:
    """The admin token kept in ``data_dir``; create it (owner-only file) if absent.

    Returns the secret and whether it was created now. A file whose token the database does
    not know (a fresh database) is registered again under the same secret.
    """
    path = data_dir / ADMIN_TOKEN_FILE
    if path.exists():
        secret = path.read_text().strip()
        token_id = _token_id(secret)
        if token_id is not None and await verify_secret(storage, secret) is not None:
            return secret, False
        known = {t.id for t in await storage.list_tokens()}
        if token_id is not None and token_id not in known:
            await _store(storage, token_id, secret, "admin", PERMISSIONS, None)
            return secret, False
        # A revoked admin token is not brought back: a new one replaces it.
    record, secret = await create_token(
        storage, name="admin", permissions=list(PERMISSIONS), accounts=None
    )
    del record
    _write_owner_only(path, secret)
    return secret, True


def _write_owner_only(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    # O_CREAT's mode does not apply to a file that already existed.
    os.chmod(path, 0o600)
