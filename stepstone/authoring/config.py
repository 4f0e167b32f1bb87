"""Step configuration: validation, defaults and the recorded (resolved) form.

Authors pass a plain dict as in Cloudflare Python (``{"retries": {"limit": 3, "delay": "5
seconds", "backoff": "linear"}, "timeout": "2 minutes", "sensitive": "output"}``) or the frozen
``StepConfig``/``RetryConfig`` dataclasses. Unknown keys are rejected. Defaults follow
Cloudflare's production documentation: 5 retries, a 10 second delay, exponential backoff and a
10 minute timeout per attempt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from stepstone.authoring.durations import InvalidDurationError, parse_duration
from stepstone.errors import WorkflowFatalError

Backoff = Literal["constant", "linear", "exponential"]
BACKOFFS: tuple[str, ...] = ("constant", "linear", "exponential")
MAX_RETRIES = 10_000
DEFAULT_LIMIT = 5
DEFAULT_DELAY_MS = 10_000
DEFAULT_BACKOFF: Backoff = "exponential"
DEFAULT_TIMEOUT = "10 minutes"
DYNAMIC_DELAY = "[dynamic]"
# retries.limit may be infinite (Cloudflare's resolved config: ``number | Infinity``): given as
# ``math.inf`` or "Infinity", recorded and shown as "Infinity", since JSON has no infinity.
INFINITY = "Infinity"


@dataclass(frozen=True)
class RetryConfig:
    """Retry policy of a step.

    Attributes:
        limit: retries after the first attempt (total attempts = limit + 1), 0 to 10,000, or
            ``math.inf``: retry until the step succeeds or the instance is stopped.
        delay: base delay in ms, a duration string, or ``fn(ctx, error) -> duration``.
        backoff: "constant" (delay), "linear" (delay * n) or "exponential" (delay * 2**(n-1)).
    """

    limit: int | float = DEFAULT_LIMIT
    delay: int | str | Callable[..., Any] = DEFAULT_DELAY_MS
    backoff: Backoff = DEFAULT_BACKOFF


@dataclass(frozen=True)
class StepConfig:
    """Configuration of one ``step.do``.

    Attributes:
        retries: the retry policy.
        timeout: per-attempt timeout, in ms or a duration string; must be > 0.
        sensitive: ``"output"`` hides the step's output from every observer.
    """

    retries: RetryConfig = RetryConfig()
    timeout: int | str = DEFAULT_TIMEOUT
    sensitive: Literal["output"] | None = None


@dataclass(frozen=True)
class ResolvedConfig:
    """A validated config with defaults applied; ``recorded()`` is what history stores."""

    limit: int | float
    delay: int | Callable[..., Any]
    delay_shown: int | str
    backoff: str
    timeout_ms: int
    timeout_shown: int | str
    sensitive: bool

    def recorded(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "retries": {
                "limit": INFINITY if self.limit == math.inf else self.limit,
                "delay": self.delay_shown,
                "backoff": self.backoff,
            },
            "timeout": self.timeout_shown,
        }
        if self.sensitive:
            cfg["sensitive"] = "output"
        return cfg


def _as_mapping(config: object, step_name: str) -> Mapping[str, Any]:
    if config is None:
        return {}
    if isinstance(config, StepConfig):
        out: dict[str, Any] = {
            "retries": {
                "limit": config.retries.limit,
                "delay": config.retries.delay,
                "backoff": config.retries.backoff,
            },
            "timeout": config.timeout,
        }
        if config.sensitive is not None:
            out["sensitive"] = config.sensitive
        return out
    if isinstance(config, Mapping):
        return config
    raise _invalid(step_name, f"expected a dict or StepConfig, got {type(config).__name__}")


def _invalid(step_name: str, why: str) -> WorkflowFatalError:
    return WorkflowFatalError(f'Step config for "{step_name}" is in an invalid format: {why}')


def resolve_config(config: object, step_name: str) -> ResolvedConfig:
    """Validate ``config`` and merge it over the defaults, key by key."""
    if config is None:
        return DEFAULT_CONFIG
    raw = _as_mapping(config, step_name)
    unknown = set(raw) - {"retries", "timeout", "sensitive"}
    if unknown:
        raise _invalid(step_name, f"unknown keys {sorted(unknown)}")
    limit, delay, delay_shown, backoff = _resolve_retries(raw.get("retries"), step_name)
    timeout_shown = raw.get("timeout", DEFAULT_TIMEOUT)
    try:
        timeout_ms = parse_duration(timeout_shown)
    except InvalidDurationError as exc:
        raise _invalid(step_name, f"timeout: {exc}") from None
    if timeout_ms <= 0:
        raise _invalid(step_name, "timeout must be greater than 0")
    sensitive = raw.get("sensitive")
    if sensitive not in (None, "output"):
        raise _invalid(step_name, "sensitive must be 'output'")
    return ResolvedConfig(
        limit=limit,
        delay=delay,
        delay_shown=delay_shown,
        backoff=backoff,
        timeout_ms=timeout_ms,
        timeout_shown=timeout_shown,
        sensitive=sensitive == "output",
    )


def _resolve_retries(
    retries: object, step_name: str
) -> tuple[int | float, int | Callable[..., Any], int | str, str]:
    if retries is None:
        return DEFAULT_LIMIT, DEFAULT_DELAY_MS, DEFAULT_DELAY_MS, DEFAULT_BACKOFF
    if not isinstance(retries, Mapping):
        raise _invalid(step_name, "retries must be a dict")
    unknown = set(retries) - {"limit", "delay", "backoff"}
    if unknown:
        raise _invalid(step_name, f"unknown retries keys {sorted(unknown)}")
    if "limit" not in retries or "delay" not in retries:
        raise _invalid(step_name, "retries needs both limit and delay")
    limit = retries["limit"]
    if limit == INFINITY or (isinstance(limit, float) and limit == math.inf):
        limit = math.inf
    elif isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_RETRIES:
        raise _invalid(
            step_name, f"retries.limit must be an integer from 0 to {MAX_RETRIES} or Infinity"
        )
    backoff = retries.get("backoff", DEFAULT_BACKOFF)
    if backoff not in BACKOFFS:
        raise _invalid(step_name, f"retries.backoff must be one of {', '.join(BACKOFFS)}")
    delay = retries["delay"]
    if callable(delay):
        return limit, delay, DYNAMIC_DELAY, backoff
    try:
        delay_ms = parse_duration(delay)
    except InvalidDurationError as exc:
        raise _invalid(step_name, f"retries.delay: {exc}") from None
    return limit, delay_ms, delay, backoff


def parse_rollback_config(config: object, step_name: str) -> ResolvedConfig:
    """Rollback handlers take retries and timeout, with the same defaults as steps."""
    raw = _as_mapping(config, step_name)
    if "sensitive" in raw:
        raise _invalid(step_name, "rollback_config takes only retries and timeout")
    return resolve_config(raw, step_name)


DEFAULT_CONFIG = resolve_config({}, "default")
