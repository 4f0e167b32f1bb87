"""Pure retry arithmetic (spec 4.3): how long to wait after the n-th failed attempt."""

from __future__ import annotations


def backoff_delay_ms(base_ms: int, failed_attempts: int, backoff: str) -> int:
    """Delay after ``failed_attempts`` failures (1 after the first) for a base delay."""
    if failed_attempts < 1:
        raise ValueError("failed_attempts counts from 1")
    if backoff == "constant":
        return base_ms
    if backoff == "linear":
        return base_ms * failed_attempts
    if backoff == "exponential":
        return base_ms * (1 << (failed_attempts - 1))
    raise ValueError(f"unknown backoff {backoff!r}")


def should_retry(attempts_made: int, limit: int | float | str) -> bool:
    """``limit`` counts retries after the first attempt, so ``limit + 1`` attempts in all;
    "Infinity" (as a recorded config holds ``math.inf``) always retries."""
    if limit == "Infinity":
        return True
    return attempts_made <= float(limit)
