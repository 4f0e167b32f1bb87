"""Instance details reduced to what both engines must agree on.

Dropped everywhere: timestamps, ids, ``versionId``, ``trigger``, ``success`` and ``rollback`` of
the instance (the local engine has neither), ``step_count`` (each counts its own entry kinds) and
a wait's ``event_type`` (production and Stepstone show it, the local engine does not).

Known differences are mapped here, each one on one side only, and each is asserted on the raw
details by its own behaviour in test_conformance.py (so a mapping that stops being true fails):

- outputs: Stepstone (like production) renders outputs as JSON text, the local engine returns
  the values; both are read back as values (``value``);
- the local engine's default retry delay is 1 s, production's (and Stepstone's) 10 s;
- the local engine never shows ``waiting``; Stepstone does while it sleeps or waits;
- the local engine's wait ``output`` is the event ``{type, payload, timestamp}``, Stepstone's
  the payload;
- Stepstone lists rollback and termination entries among the steps; the local explorer API
  leaves them out (the rollback is compared against the local engine's own log instead).
"""

from __future__ import annotations

import json
from typing import Any

LOCAL_DEFAULT_RETRIES = {"limit": 5, "backoff": "exponential", "delay": 1000}
DEFAULT_RETRIES = {"limit": 5, "backoff": "exponential", "delay": 10000}


def value(rendered: Any) -> Any:
    """An output as a value: JSON text is parsed, anything else is kept."""
    if isinstance(rendered, str):
        try:
            return json.loads(rendered)
        except ValueError:
            return rendered
    return rendered


def _config(config: Any, *, local: bool) -> Any:
    if not isinstance(config, dict):
        return config
    retries = config.get("retries")
    if local and retries == LOCAL_DEFAULT_RETRIES:
        config = {**config, "retries": DEFAULT_RETRIES}
    retries = config.get("retries")
    if isinstance(retries, dict):
        # Key order is not part of the contract.
        config = {**config, "retries": dict(sorted(retries.items()))}
    return dict(sorted(config.items()))


def _attempt(attempt: dict[str, Any]) -> dict[str, Any]:
    return {"success": attempt.get("success"), "error": attempt.get("error")}


def step(entry: dict[str, Any], *, local: bool) -> dict[str, Any]:
    kind = entry.get("type")
    out: dict[str, Any] = {"type": kind, "name": entry.get("name")}
    if kind in ("step", "rollback"):
        out["success"] = entry.get("success")
        out["output"] = value(entry.get("output"))
        out["config"] = _config(entry.get("config"), local=local)
        out["attempts"] = [_attempt(a) for a in entry.get("attempts", [])]
    elif kind == "sleep":
        out["finished"] = entry.get("finished")
        out["error"] = entry.get("error")
    elif kind == "waitForEvent":
        out["finished"] = entry.get("finished")
        out["error"] = entry.get("error")
        output = entry.get("output")
        if local and isinstance(output, dict):
            output = output.get("payload")
        out["output"] = value(output)
    return out


def details(raw: dict[str, Any], *, local: bool) -> dict[str, Any]:
    status = raw.get("status")
    if not local and status == "waiting":
        status = "running"
    output = raw.get("output")
    steps = [
        step(entry, local=local)
        for entry in raw.get("steps", [])
        if local or entry.get("type") not in ("rollback", "termination")
    ]
    return {
        "status": status,
        "params": raw.get("params"),
        # Stepstone shows "" for an instance without output (the SDK wants a string).
        "output": None if output in (None, "") else value(output),
        "error": raw.get("error"),
        "steps": steps,
    }


def pair(local_raw: dict[str, Any], stepstone_raw: dict[str, Any]) -> tuple[Any, Any]:
    return details(local_raw, local=True), details(stepstone_raw, local=False)
