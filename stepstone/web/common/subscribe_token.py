"""Subscribe tokens: a short-lived credential that opens one instance's event stream.

A browser's ``EventSource`` cannot send an ``Authorization`` header, so a page that should not
hold an API token asks its server (which does) to mint one of these with
``GET …/instances/{id}/subscribe/token`` and opens ``…/subscribe?token=<token>``.

A token is ``<claims>.<signature>`` (``stepstone.signed``): account, workflow, instance id
and expiry (epoch ms), under a key made once per database, so every server on it accepts it
alike. It opens only that instance's stream, only for reading, and only until it expires; an
``EventSource`` reconnecting within that time resumes with it (``Last-Event-ID``), one
reconnecting later is refused (401) and must be given a new token.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from stepstone import auth as tokens
from stepstone import signed
from stepstone.ops import Queries
from stepstone.web.common.auth import Principal

KEY_NAME = "subscribe-tokens"
LIFETIME_MS = 15 * 60_000
QUERY_KEY = "token"
# Only the stream itself takes a token; minting one needs a real credential.
_STREAM_PATH = re.compile(
    r"^/client/v4/accounts/([^/]+)/workflows/([^/]+)/instances/([^/]+)/subscribe$"
)
STREAM_READER = frozenset({tokens.SCRIPTS_READ})


async def mint(
    ops: Queries, account_id: str, workflow: str, instance_id: str, now: int
) -> tuple[str, int]:
    """A token for the instance's stream, and when it expires (epoch ms)."""
    expires = now + LIFETIME_MS
    claims = {"a": account_id, "w": workflow, "i": instance_id, "e": expires}
    return signed.seal(await ops.signing_key(KEY_NAME), claims), expires


async def principal(ops: Queries, path: str, token: str, now: int) -> Principal | None:
    """Who a token speaks for on ``path``: a read-only principal of the token's account, or
    None if the token is malformed, tampered with, expired, or for another stream."""
    match = _STREAM_PATH.match(path)
    if match is None or not signed.verified(await ops.signing_key(KEY_NAME), token):
        return None
    claims = signed.claims_of(token)
    if claims is None or not isinstance(claims.get("e"), int) or now >= claims["e"]:
        return None
    # The path as the client sent it, percent-decoding each segment as the router does.
    account, workflow, instance = (unquote(part) for part in match.groups())
    if (claims.get("a"), claims.get("w"), claims.get("i")) != (account, workflow, instance):
        return None
    return Principal("subscribe-token", STREAM_READER, (account,))
