"""Payload-matched waits (``wait_for_event(..., match={...})``, a Stepstone extension).

An event satisfies a match when its payload contains every key of the match with an equal
value: objects are compared key by key (nested, so a payload may hold more keys at any depth),
anything else exactly (a list is equal only to the same list; ``true`` never equals ``1``).
Both backends decide in Python with this one function, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson


def first_match(rows: Iterable[Any], match: Mapping[str, Any] | None) -> Any:
    """The first of ``(seq, payload, ...)`` rows, oldest first, whose payload matches."""
    for row in rows:
        if match is None or payload_matches(orjson.loads(row[1]), match):
            return row
    return None


def payload_matches(payload: Any, match: Mapping[str, Any]) -> bool:
    if not isinstance(payload, dict):
        return False
    for key, wanted in match.items():
        if key not in payload:
            return False
        if not _equal(payload[key], wanted):
            return False
    return True


def _equal(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        return payload_matches(value, wanted)
    if isinstance(wanted, list):
        return (
            isinstance(value, list)
            and len(value) == len(wanted)
            and all(_exact(v, w) for v, w in zip(value, wanted, strict=True))
        )
    return _exact(value, wanted)


def _exact(value: Any, wanted: Any) -> bool:
    """JSON equality: types agree (a bool is not a number), numbers by value."""
    if isinstance(wanted, bool) or isinstance(value, bool):
        return type(value) is type(wanted) and value == wanted
    if isinstance(wanted, int | float) and isinstance(value, int | float):
        return value == wanted
    if isinstance(wanted, dict):
        return (
            isinstance(value, dict)
            and value.keys() == wanted.keys()
            and all(_exact(value[k], wanted[k]) for k in wanted)
        )
    if isinstance(wanted, list):
        return _equal(value, wanted)
    return type(value) is type(wanted) and value == wanted
