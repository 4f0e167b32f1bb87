"""Query parameters in every form the clients send: dates, cursors, pages."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

import orjson

from stepstone.errors import InvalidRequest

# A page past this is refused (400): (page - 1) * per_page must fit a 64-bit store offset.
MAX_PAGE = 2**31 - 1


def parse_date(value: str | None, name: str) -> int | None:
    """Epoch ms from ``2026-01-01T00:00:00`` (naive means UTC), ``...+00:00`` or
    ``...T00:00:00.000Z``; a bare date is its midnight UTC."""
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        raise InvalidRequest(
            f"{name} must be an ISO-8601 date, e.g. 2026-01-01T00:00:00Z; got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def encode_cursor(created_on: int, instance_id: str, ascending: bool) -> str:
    raw = orjson.dumps([created_on, instance_id, "asc" if ascending else "desc"])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[tuple[int, str], bool]:
    """The keyset position ``(created_on, id)`` and the direction the cursor was made for."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_on, instance_id, direction = orjson.loads(raw)
        if not isinstance(created_on, int) or not isinstance(instance_id, str):
            raise ValueError
        if direction not in ("asc", "desc"):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidRequest(f"cursor {cursor!r} is not one this server handed out") from None
    return (created_on, instance_id), direction == "asc"
