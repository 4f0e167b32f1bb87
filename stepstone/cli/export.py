"""``stepstone instances export``: recorded instances as JSON, for ``stepstone replay
--history`` (a production history replayed in a test or in CI, away from the database).

It reads the store directly, as ``replay --db`` does: the export holds each instance's full
event log and byte-stream outputs, which the REST API does not serve in that form. Sensitive
step outputs are in it as they are in the database (plaintext): treat the file as the data.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from stepstone.cli import render
from stepstone.cli.client import fail
from stepstone.cli.replay import (
    InstanceOption,
    StatusOption,
    WorkflowOption,
    check_status,
    existing_store,
)
from stepstone.cli.server_cmds import explained_startup, open_store
from stepstone.engine.recorded import encode_export, select, with_streams

StoreOption = Annotated[
    str,
    typer.Option("--db", help="The store to export from: sqlite:///path.db, postgresql://host/db."),
]
AccountOption = Annotated[
    str | None,
    typer.Option(
        "--account", help="Only this account (default: every account).", show_default=False
    ),
]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Write to this file (default: stdout).", show_default=False
    ),
]


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    db: StoreOption,
    workflow: WorkflowOption = None,
    instance: InstanceOption = None,
    status: StatusOption = None,
    account: AccountOption = None,
    output: OutputOption = None,
) -> None:
    """Export recorded instances (event logs and stream outputs) as JSON."""
    check_status(status)
    existing_store(db)

    async def main() -> bytes:
        storage = await open_store(db)
        try:
            items = [
                await with_streams(storage, item)
                async for item in select(
                    storage, account, workflow=workflow, instance=instance, status=status
                )
            ]
        except LookupError as exc:
            fail(str(exc).strip("'\""))
        finally:
            await storage.close()
        render.err_console.print(f"exported {len(items)} instance(s)", highlight=False)
        return encode_export(items)

    with explained_startup(db):
        data = asyncio.run(main())
    if output is None:
        sys.stdout.buffer.write(data + b"\n")
        sys.stdout.flush()
        return
    try:
        output.write_bytes(data + b"\n")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
