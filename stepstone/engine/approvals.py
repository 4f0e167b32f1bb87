"""Approval links (a Stepstone extension): a signed, expiring, single-use URL that sends one
event to one instance, for a person who has no API token.

A link is a row (``approval_links``) and a token: ``<claims>.<signature>``, the claims being
the link's id, instance, event type and expiry, signed with HMAC-SHA256 under a key made once
per database (``signing_keys``), so every server on the database checks alike. The signature
binds instance, event type and expiry; the row makes the link single-use (the one submission
that marks it used sends the event). Every refusal (tampered, unknown, expired, used, instance
ended) is recorded in the audit log, as is the event sent.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import orjson

from stepstone import signed
from stepstone.errors import CannotSendEvent, InstanceNotFound
from stepstone.model.actors import Actor
from stepstone.model.ops_records import AuditEntry
from stepstone.storage.base import ApprovalLinkRecord, Storage

PREFIX = "/stepstone/approve/"
PUBLIC_URL_ENV = "STEPSTONE_PUBLIC_URL"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8787"
KEY_NAME = "approval-links"
DEFAULT_EXPIRES = "24 hours"
MIN_EXPIRES_MS = 1_000
MAX_EXPIRES_MS = 365 * 86_400_000
MAX_TITLE = 500
MAX_COMMENT = 2_000
DECISIONS = ("approve", "reject")
ACTOR_KIND = "approval-link"
AUDIT_ACTION = "approval_link"


class Refused(Exception):
    """A link that cannot be used; ``status`` is the HTTP status its page answers with."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def public_url(explicit: str | None = None) -> str:
    """Where people reach this server: behind a proxy, set ``STEPSTONE_PUBLIC_URL``."""
    url = explicit or os.environ.get(PUBLIC_URL_ENV) or DEFAULT_PUBLIC_URL
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{PUBLIC_URL_ENV} must start with http:// or https://, not {url!r}")
    return url.rstrip("/")


async def create_link(
    storage: Storage,
    *,
    instance_pk: int,
    event_type: str,
    expires_ms: int,
    title: str | None,
    now: int,
    base_url: str | None = None,
) -> str:
    """Store a new link and return its URL."""
    link = ApprovalLinkRecord(
        id=secrets.token_urlsafe(12),
        instance_pk=instance_pk,
        event_type=event_type,
        expires_at=now + expires_ms,
        created_on=now,
        title=title,
    )
    await storage.create_approval_link(link)
    claims = {"l": link.id, "i": instance_pk, "t": event_type, "e": link.expires_at}
    token = signed.seal(await signed.key(storage, KEY_NAME), claims)
    return f"{public_url(base_url)}{PREFIX}{token}"


async def open_link(storage: Storage, token: str, now: int) -> ApprovalLinkRecord:
    """The link a token names, if it may still be used; else ``Refused`` (audited)."""
    link, refusal = await _check(storage, token, now)
    if refusal is not None:
        await _audit(storage, link, now, refusal.reason, token=token)
        raise refusal
    assert link is not None
    return link


async def submit(
    storage: Storage,
    ops: Any,
    token: str,
    decision: str,
    comment: str | None,
    now: int,
) -> ApprovalLinkRecord:
    """Use the link once: send its event with the decision; ``Refused`` otherwise."""
    if decision not in DECISIONS:
        raise Refused(400, "bad-decision", "the decision is approve or reject")
    if comment is not None and len(comment) > MAX_COMMENT:
        raise Refused(400, "bad-comment", f"a comment has at most {MAX_COMMENT} characters")
    link = await open_link(storage, token, now)
    if not await storage.use_approval_link(link.id, now):
        await _audit(storage, link, now, "used")
        raise Refused(410, "used", "This link was used already.")
    payload = {
        "approved": decision == "approve",
        "decision": decision,
        "comment": comment or None,
        "link": link.id,
    }
    actor = Actor(ACTOR_KIND, None, link.id)
    try:
        await ops.send_event(
            link.account_id,
            link.workflow,
            link.instance_id,
            link.event_type,
            orjson.dumps(payload),
            actor=actor,
        )
    except (CannotSendEvent, InstanceNotFound) as exc:
        await _audit(storage, link, now, "instance-ended", decision=decision)
        message = f"The instance cannot take it any more: {exc}"
        raise Refused(410, "instance-ended", message) from None
    await _audit(storage, link, now, None, decision=decision)
    return link


async def _check(
    storage: Storage, token: str, now: int
) -> tuple[ApprovalLinkRecord | None, Refused | None]:
    claims = signed.claims_of(token)
    link = None
    if claims is not None and isinstance(claims.get("l"), str):
        link = await storage.get_approval_link(claims["l"])
    if not signed.verified(await signed.key(storage, KEY_NAME), token) or claims is None:
        return link, Refused(403, "tampered", "This link is not valid: its signature is wrong.")
    if link is None:
        return None, Refused(404, "unknown", "This link is unknown (or its instance is gone).")
    bound = (claims.get("i"), claims.get("t"), claims.get("e"))
    if bound != (link.instance_pk, link.event_type, link.expires_at):
        return link, Refused(403, "tampered", "This link is not valid: it does not match.")
    if link.used_on is not None:
        return link, Refused(410, "used", "This link was used already.")
    if now >= link.expires_at:
        return link, Refused(410, "expired", "This link has expired.")
    return link, None


async def _audit(
    storage: Storage,
    link: ApprovalLinkRecord | None,
    now: int,
    refusal: str | None,
    *,
    decision: str | None = None,
    token: str | None = None,
) -> None:
    detail: dict[str, Any] = {"decision": decision} if decision else {}
    if refusal is not None:
        detail["refused"] = refusal
    if link is None and token is not None:
        detail["token"] = token[:200]
    entry = AuditEntry(
        at=now,
        account_id=link.account_id if link is not None else "",
        action=AUDIT_ACTION,
        actor_kind=ACTOR_KIND,
        outcome="ok" if refusal is None else "error",
        actor_id=link.id if link is not None else None,
        workflow_name=link.workflow if link is not None else None,
        instance_id=link.instance_id if link is not None else None,
        detail=orjson.dumps({**detail, "eventType": link.event_type} if link else detail),
    )
    await storage.append_audit([entry])
