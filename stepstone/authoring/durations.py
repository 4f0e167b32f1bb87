"""The one duration grammar of Stepstone, shared by step configs, sleeps, waits and retention.

A duration is an int (milliseconds), a ``datetime.timedelta``, or a string such as
``"10 seconds"``, ``"1 minute"``, ``"26 hours"`` or a bare ``"1500"`` (milliseconds). Units follow
Cloudflare's parser: a month is 30 days and a year 365.25 days. Unknown units are rejected
rather than read as NaN, so a typo fails at registration instead of sleeping forever.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import timedelta

Duration = int | float | str | timedelta

_UNIT_MS: dict[str, float] = {
    "ms": 1,
    "millisecond": 1,
    "second": 1_000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 7 * 86_400_000,
    "month": 30 * 86_400_000,
    "year": 365.25 * 86_400_000,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+?)s?\s*$")


class InvalidDurationError(ValueError):
    """Raised when a value is not a duration Stepstone understands."""


def parse_duration(value: object) -> int:
    """Return ``value`` as whole milliseconds (rounded down), or raise InvalidDurationError."""
    if isinstance(value, bool):
        raise InvalidDurationError(f"{value!r} is not a duration")
    if isinstance(value, timedelta):
        ms = value.total_seconds() * 1000
    elif isinstance(value, int | float):
        ms = float(value)
    elif isinstance(value, str):
        ms = _parse_text(value)
    else:
        raise InvalidDurationError(f"{value!r} is not a duration: use milliseconds or '10 seconds'")
    if math.isnan(ms) or math.isinf(ms) or ms < 0:
        raise InvalidDurationError(f"{value!r} is not a non-negative duration")
    return int(ms)


@functools.lru_cache(maxsize=256)
def _parse_text(text: str) -> float:
    stripped = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
        return float(stripped)
    match = _DURATION_RE.match(stripped)
    if match is None:
        raise InvalidDurationError(f"{text!r} is not a duration such as '10 seconds'")
    number, unit = match.groups()
    unit = unit.lower()
    if unit == "m":  # "ms" minus the optional plural "s"
        unit = "ms"
    if unit not in _UNIT_MS:
        units = ", ".join(sorted(_UNIT_MS))
        raise InvalidDurationError(f"{text!r} has an unknown unit {unit!r}; use one of {units}")
    return float(number) * _UNIT_MS[unit]


def format_duration(ms: int) -> str:
    """A duration for people: ``850 ms``, ``12.5 s``, ``3 min 4 s``, ``5 h 2 min``, ``3 d 1 h``."""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"
