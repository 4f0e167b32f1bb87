"""Signatures receivers check: ``Stepstone-Signature: t=<unix s>,v1=<hex HMAC-SHA256>``.

The MAC covers ``"<t>.<body>"`` with the hook's secret, so a replayed body with a new time
fails, and a receiver refuses a time further than its tolerance from its own clock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

HEADER = "Stepstone-Signature"
TOLERANCE_S = 300


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, at_s: int) -> str:
    mac = hmac.new(secret.encode(), f"{at_s}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at_s},v1={mac}"


def verify(
    secret: str, header: str, body: bytes, now_s: int, tolerance_s: int = TOLERANCE_S
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` at a time within the tolerance."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        at_s = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now_s - at_s) > tolerance_s:
        return False
    expected = sign(secret, body, at_s).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))
