"""Hooks as an operator writes them (project config, wrangler config, REST), validated.

One entry: ``{"url": "https://...", "events": ["errored", "complete"], "secret": "...",
"waitForEventLongerThan": "1 hour"}``. ``secret`` may instead name an environment variable
(``"secretEnv": "HOOK_SECRET"``) so the config file holds none; REST generates one if absent.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from stepstone.authoring.durations import InvalidDurationError, parse_duration
from stepstone.errors import InvalidRequest
from stepstone.model.webhooks import EVENTS, SOURCE_API, SOURCE_CONFIG, WAITING, WebhookRecord
from stepstone.webhooks.signing import new_secret

KEYS = {"id", "url", "events", "secret", "secretEnv", "waitForEventLongerThan"}
# waitingForEvent without waitForEventLongerThan: a wait this old is news.
DEFAULT_WAIT_THRESHOLD_MS = 3_600_000


def parse_hook(
    entry: Any,
    *,
    where: str,
    source: str = SOURCE_API,
    default_id: str | None = None,
    env: Mapping[str, str] | None = None,
    now: int = 0,
    resolve_env: bool = True,
) -> WebhookRecord:
    """A ``WebhookRecord`` from one entry, or ``InvalidRequest`` naming ``where`` and why.
    ``resolve_env`` False checks the shape only (a config read where its secrets are not)."""
    if not isinstance(entry, Mapping):
        raise InvalidRequest(f"{where}: a webhook is an object with url and events")
    unknown = sorted(set(entry) - KEYS)
    if unknown:
        raise InvalidRequest(f"{where}: unknown key(s) {', '.join(unknown)}; known: {sorted(KEYS)}")
    url = entry.get("url")
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequest(f"{where}: url must be an http(s) URL, got {url!r}")
    events = entry.get("events")
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise InvalidRequest(f"{where}: events must be a non-empty list of {list(EVENTS)}")
    bad = [e for e in events if e not in EVENTS]
    if bad:
        raise InvalidRequest(f"{where}: unknown event(s) {bad}; choose from {list(EVENTS)}")
    threshold = _threshold(entry.get("waitForEventLongerThan"), where)
    if WAITING not in events:
        threshold = None
    elif threshold is None:
        threshold = DEFAULT_WAIT_THRESHOLD_MS
    secret = _secret(entry, where, env) if resolve_env or "secretEnv" not in entry else ""
    hook_id = entry.get("id", default_id)
    if hook_id is None:
        hook_id = "wh_" + hashlib.sha256(os.urandom(16)).hexdigest()[:20]
    if not isinstance(hook_id, str) or not hook_id or len(hook_id) > 100:
        raise InvalidRequest(f"{where}: id must be a string of 1 to 100 characters")
    return WebhookRecord(
        hook_id, str(url), tuple(dict.fromkeys(events)), secret, threshold, source, now
    )


def config_hook_id(account_id: str, workflow: str, index: int) -> str:
    """Stable across restarts, so a config hook keeps its deliveries when re-synced."""
    digest = hashlib.sha256(f"{account_id}/{workflow}/{index}".encode()).hexdigest()[:16]
    return f"cfg_{digest}"


def _threshold(value: Any, where: str) -> int | None:
    if value is None:
        return None
    try:
        ms = parse_duration(value)
    except (InvalidDurationError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"{where}: waitForEventLongerThan: {exc}") from None
    if ms <= 0:
        raise InvalidRequest(f"{where}: waitForEventLongerThan must be positive")
    return ms


def _secret(entry: Mapping[str, Any], where: str, env: Mapping[str, str] | None) -> str:
    secret, name = entry.get("secret"), entry.get("secretEnv")
    if secret is not None and name is not None:
        raise InvalidRequest(f"{where}: give secret or secretEnv, not both")
    if name is not None:
        value = (os.environ if env is None else env).get(str(name))
        if not value:
            raise InvalidRequest(f"{where}: secretEnv {name!r} is not set in the environment")
        return value
    if secret is None:
        return new_secret()
    if not isinstance(secret, str) or len(secret) < 16:
        raise InvalidRequest(f"{where}: secret must be a string of at least 16 characters")
    return secret


def config_entries(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    """A workflow's ``webhooks`` list from a project or wrangler config, shape-checked."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest(f"{where}webhooks must be a list of tables")
    for index, entry in enumerate(value):
        parse_hook(entry, where=f"{where}webhooks[{index}]", resolve_env=False)
    return tuple(dict(entry) for entry in value)


async def sync_config_hooks(
    storage: Any, account_id: str, workflows: Sequence[Any], records: Sequence[Any], now: int
) -> None:
    """Make each configured workflow's config-sourced hooks exactly its config's list (hooks
    added over REST are left alone); ids are stable, so deliveries survive a restart."""
    for wf, record in zip(workflows, records, strict=True):
        hooks = [
            parse_hook(
                entry,
                where=f"workflow {wf.name!r} webhooks[{index}]",
                source=SOURCE_CONFIG,
                default_id=config_hook_id(account_id, wf.name, index),
                now=now,
            )
            for index, entry in enumerate(wf.webhooks)
        ]
        await storage.put_webhooks(record.pk, hooks, replace_source=SOURCE_CONFIG)
