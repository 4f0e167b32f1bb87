"""``stepstone instances approval-link WORKFLOW ID --type T --expires 1h`` (a Stepstone
extension): an operator makes the signed, single-use link that a workflow makes with
``step.approval_link``, and hands it to whoever decides.

It opens the store directly, as ``export`` and ``replay`` do: the link's signing key lives in
the database, so the link it prints works on every server of that database.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from stepstone.authoring.durations import InvalidDurationError, parse_duration
from stepstone.cli.client import fail, usage
from stepstone.cli.replay import existing_store
from stepstone.cli.server_cmds import explained_startup, open_store
from stepstone.engine import approvals
from stepstone.model.statuses import TERMINAL
from stepstone.storage.base import Storage
from stepstone.validation import event_type_problem


def register(app: typer.Typer) -> None:
    app.command("approval-link")(approval_link)


def approval_link(
    workflow: Annotated[str, typer.Argument(help="The workflow's name.")],
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="The instance's id.")],
    db: Annotated[
        str, typer.Option("--db", help="The store: sqlite:///path.db, postgresql://host/db.")
    ],
    event_type: Annotated[
        str, typer.Option("--type", help="The event type the link sends (what the run waits for).")
    ],
    expires: Annotated[
        str, typer.Option("--expires", help="How long the link works: 1h, 30 minutes, 2 days.")
    ] = approvals.DEFAULT_EXPIRES,
    title: Annotated[
        str | None, typer.Option("--title", help="What is being approved, shown on the page.")
    ] = None,
    account: Annotated[
        str | None,
        typer.Option("--account", help="The workflow's account, if several have one so named."),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            envvar=approvals.PUBLIC_URL_ENV,
            help="Where people reach the server (behind a proxy: its public URL).",
        ),
    ] = None,
) -> None:
    """Print a signed, expiring, single-use approval link for an instance."""
    problem = event_type_problem(event_type)
    if problem:
        usage(problem, "--type")
    try:
        expires_ms = parse_duration(_long_form(expires))
    except InvalidDurationError as exc:
        usage(str(exc), "--expires")
    if not approvals.MIN_EXPIRES_MS <= expires_ms <= approvals.MAX_EXPIRES_MS:
        usage("a link expires in 1 second to 365 days", "--expires")
    if title is not None and len(title) > approvals.MAX_TITLE:
        usage(f"a title has at most {approvals.MAX_TITLE} characters", "--title")
    try:
        base = approvals.public_url(public_url)
    except ValueError as exc:
        usage(str(exc), "--public-url")
    existing_store(db)

    async def main() -> str:
        storage = await open_store(db)
        try:
            pk = await _instance_pk(storage, account, workflow, instance_id)
            return await approvals.create_link(
                storage,
                instance_pk=pk,
                event_type=event_type,
                expires_ms=expires_ms,
                title=title,
                now=_now(),
                base_url=base,
            )
        finally:
            await storage.close()

    with explained_startup(db):
        url = asyncio.run(main())
    typer.echo(url)


async def _instance_pk(
    storage: Storage, account: str | None, workflow: str, instance_id: str
) -> int:
    page, _ = await storage.list_workflows(account, workflow, 0, 100)
    found = [w for w in page if w.name == workflow]
    if not found:
        fail(f"no workflow named {workflow!r}" + (f" in account {account!r}" if account else ""))
    if len(found) > 1:
        accounts = ", ".join(sorted(w.account_id for w in found))
        usage(f"accounts {accounts} each have a workflow {workflow!r}: pick one", "--account")
    instance = await storage.get_instance(found[0].pk, instance_id)
    if instance is None:
        fail(f"no instance {instance_id!r} of workflow {workflow!r}")
    if instance.status in TERMINAL:
        fail(f"instance {instance_id!r} is {instance.status}: it can take no event")
    return instance.pk


def _long_form(value: str) -> str | int:
    """``1h``, ``30m``, ``2d`` and ``45s`` as well as the durations steps take."""
    short = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    number, unit = value[:-1], value[-1:]
    if number.isdigit() and unit in short:
        return f"{number} {short[unit]}"
    return int(value) if value.isdigit() else value


def _now() -> int:
    import time

    return int(time.time() * 1000)
