"""Signed claims, for credentials a person or a browser carries in a URL (approval links,
subscribe tokens): ``<claims>.<signature>``, base64url JSON signed with HMAC-SHA256.

Each kind has its own key, made once per database and kept by the store (``signing_key``), so
every server on the database checks a token alike and a key of one kind opens nothing of another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Any

import orjson

from stepstone.storage.base import Storage


async def key(storage: Storage, name: str) -> bytes:
    return await storage.signing_key(name, secrets.token_bytes(32))


def seal(key: bytes, claims: dict[str, Any]) -> str:
    body = _b64(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS))
    return f"{body}.{_b64(_mac(key, body))}"


def claims_of(token: str) -> dict[str, Any] | None:
    """The token's claims, unverified (to say what a refused token was for); None if malformed."""
    body = token.partition(".")[0]
    try:
        value = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, binascii.Error):
        return None
    return value if isinstance(value, dict) else None


def verified(key: bytes, token: str) -> bool:
    """Whether the token's signature is the one ``key`` makes for its claims."""
    body, _, signature = token.partition(".")
    return bool(signature) and hmac.compare_digest(signature, _b64(_mac(key, body)))


def _mac(key: bytes, body: str) -> bytes:
    return hmac.new(key, body.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
