"""Approval links (an extension) as a front-end uses them: open one, use it once.

The tokens, their checks and their audit are ``stepstone.engine.approvals``'s (a step makes
the links there); these take the operations a front-end holds, and the names its page needs.
"""

from __future__ import annotations

from stepstone.engine import approvals as links
from stepstone.engine.approvals import MAX_COMMENT, PREFIX, Refused
from stepstone.model.records import ApprovalLinkRecord
from stepstone.ops.service import Operations

__all__ = ["MAX_COMMENT", "PREFIX", "Refused", "open_link", "submit"]


async def open_link(ops: Operations, token: str, now: int) -> ApprovalLinkRecord:
    """The link a token names, if it may still be used; else ``Refused`` (audited)."""
    return await links.open_link(ops.storage, token, now)


async def submit(
    ops: Operations, token: str, decision: str, comment: str | None, now: int
) -> ApprovalLinkRecord:
    """Use the link once: send its event with the decision; ``Refused`` otherwise."""
    return await links.submit(ops.storage, ops, token, decision, comment, now)
