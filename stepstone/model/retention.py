"""Retention's rule: which retention an ended instance keeps, and the default.

The stores compute ``expires_at`` when an instance ends (``success_retention`` after
``complete``, ``error_retention`` after ``errored`` or ``terminated``), resolving each value
from the instance, then its version, then the account settings, then the workflow's fallback
(``WorkflowRecord.retention_fallback_ms``), then ``DEFAULT_RETENTION_MS``; the PL/pgSQL
release of the PostgreSQL store takes the default as a parameter. The sweeper that deletes
what has expired is ``stepstone.retention``.

``DEFAULT_RETENTION_MS`` is 7 days, Cloudflare's paid default for Workflows created since
2026-09-10. Workflows registered before Stepstone adopted it were created under 30 days:
storage migration 0004 (SQLite) / 0008 (PostgreSQL) stored that as their fallback, so what
they keep does not change, while account settings still override both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stepstone.model.records import VersionRecord

# The one definition of the default: the stores import it (their SQL takes it as a parameter).
DEFAULT_RETENTION_MS = 7 * 86_400_000
# The default of Workflows created before 2026-09-10 (and Cloudflare's maximum; Stepstone,
# self-hosted, allows longer). The migrations write this value as a literal.
LEGACY_DEFAULT_RETENTION_MS = 30 * 86_400_000


def resolve_retention(
    version: VersionRecord | None,
    account: tuple[int | None, int | None],
    instance: tuple[int | None, int | None] = (None, None),
    fallback: int | None = None,
) -> tuple[int, int]:
    """``(success_ms, error_ms)``: instance, then version, then account, then the workflow's
    ``fallback``, then the default."""
    version_values = (
        (version.success_retention_ms, version.error_retention_ms) if version else (None, None)
    )
    resolved = []
    for index in (0, 1):
        for value in (instance[index], version_values[index], account[index], fallback):
            if value is not None:
                resolved.append(value)
                break
        else:
            resolved.append(DEFAULT_RETENTION_MS)
    return resolved[0], resolved[1]
