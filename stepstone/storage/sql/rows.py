"""Column lists both SQL stores select, in their records' field order, and the records made
of their rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import orjson

from stepstone.model.records import InstanceRecord, TokenRecord, VersionRecord, WorkflowRecord

INSTANCE_FIELDS = tuple(f.name for f in fields(InstanceRecord))
INSTANCE_COLUMNS = ", ".join(INSTANCE_FIELDS)
VERSION_COLUMNS = (
    "id, workflow_pk, class_name, script_name, created_on, limits_steps, success_retention_ms,"
    " error_retention_ms, schedules, language, concurrency_limit"
)
TOKEN_COLUMNS = "id, name, permissions, accounts, created_on, revoked_on"
# A workflow with its current version.
WORKFLOW_SELECT = (
    "SELECT w.pk, w.account_id, w.name, w.id, w.created_on, w.modified_on, w.triggered_on,"
    f" {', '.join('v.' + c.strip() for c in VERSION_COLUMNS.split(','))},"
    " w.jurisdiction, w.retention_fallback_ms"
    " FROM workflows w JOIN versions v ON v.id = w.version_id"
)


def version_row(row: Sequence[Any]) -> VersionRecord:
    values = list(row)
    values[8] = tuple(orjson.loads(values[8]))  # schedules, stored as a JSON list
    return VersionRecord(*values)


def workflow_row(row: Sequence[Any]) -> WorkflowRecord:
    return WorkflowRecord(*row[:7], version_row(row[7:-2]), row[-2], row[-1])  # type: ignore[call-arg]


def token_row(row: Sequence[Any]) -> TokenRecord:
    return TokenRecord(
        id=row[0],
        name=row[1],
        permissions=tuple(orjson.loads(row[2])),
        accounts=None if row[3] is None else tuple(orjson.loads(row[3])),
        created_on=row[4],
        revoked_on=row[5],
    )
