"""``stepstone audit``: who did what to which instances, newest first (extension)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from stepstone.cli import render
from stepstone.cli.client import (
    DEFAULT_ACCOUNT,
    DEFAULT_URL,
    AccountOption,
    JsonOption,
    TokenOption,
    UrlOption,
    connect,
    seg,
)
from stepstone.cli.instances import normalize_date

PAGE = 200


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)


def audit(
    workflow: Annotated[str | None, typer.Option(help="Only this workflow.")] = None,
    instance: Annotated[str | None, typer.Option(help="Only this instance.")] = None,
    since: Annotated[str | None, typer.Option(help="At or after (ISO 8601, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Before (ISO 8601, UTC).")] = None,
    action: Annotated[
        list[str] | None, typer.Option(help="Only this action, e.g. terminate (repeatable).")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Only this token name or id.")] = None,
    bulk_job: Annotated[str | None, typer.Option(help="Only what this bulk job did.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many entries.")] = 50,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Show the audit log: every operator action, who asked, and how it ended."""
    params: dict[str, Any] = {
        "workflow": workflow,
        "instance": instance,
        "since": normalize_date(since, end=False) if since else None,
        "until": normalize_date(until, end=False) if until else None,
        "action": ",".join(action) if action else None,
        "actor": actor,
        "bulk_job": bulk_job,
    }
    entries: list[dict[str, Any]] = []
    with connect(url, token, account) as client:
        path = f"/accounts/{seg(client.account)}/stepstone/audit"
        cursor: str | None = None
        while len(entries) < limit:
            page = client.call_page(
                "GET",
                path,
                params={**params, "per_page": min(PAGE, limit - len(entries)), "cursor": cursor},
            )
            entries += list(page.result or [])
            cursor = page.info.get("cursor")
            if not cursor:
                break
    if json_:
        render.print_json(entries)
        return
    if not entries:
        render.warn("No audit entries match.")
        return
    table = Table(title="Audit log (newest first)")
    for column in ("When", "Actor", "Action", "Workflow", "Instance", "Outcome"):
        table.add_column(column)
    for e in entries:
        who = e["actor"]
        name = who.get("name") or who.get("kind")
        if who.get("id"):
            name = f"{name} ({who['id'][:8]})"
        outcome = e["outcome"]
        error = (e.get("detail") or {}).get("error")
        if error:
            outcome = f"error {error.get('code')}: {error.get('message')}"
        elif (e.get("detail") or {}).get("status"):
            outcome = f"ok → {e['detail']['status']}"
        action_text = e["action"] + (" (bulk)" if e.get("bulk_job_id") else "")
        table.add_row(
            render.when(e["at"]),
            name,
            action_text,
            e.get("workflow") or "",
            e.get("instance") or "",
            outcome,
        )
    render.console.print(table)
