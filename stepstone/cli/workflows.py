"""``stepstone workflows``: wrangler's ``workflows`` commands over the REST API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stepstone.cli import render
from stepstone.cli.client import AccountOption, JsonOption, TokenOption, UrlOption, connect
from stepstone.cli.client import parse_json as parse_json_arg

app = typer.Typer(help="List, describe, delete and trigger workflows.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Workflow name.", show_default=False)]


@app.command("list")
def list_workflows(
    page: Annotated[int, typer.Option(min=1, help="Page number.")] = 1,
    per_page: Annotated[
        int | None, typer.Option(min=1, max=100, help="Workflows per page.")
    ] = None,
    url: UrlOption = "http://127.0.0.1:8787",
    token: TokenOption = None,
    account: AccountOption = "default",
    json_: JsonOption = False,
) -> None:
    """List workflows, newest first."""
    with connect(url, token, account) as client:
        result = client.call("GET", client.workflows(), params={"page": page, "per_page": per_page})
    workflows = sorted(result or [], key=lambda w: str(w.get("created_on", "")), reverse=True)
    if json_:
        render.print_json(workflows)
    elif not workflows:
        render.warn("There are no deployed Workflows" + (f" on page {page}" if page > 1 else ""))
    else:
        render.workflows_table(workflows)


@app.command()
def describe(
    name: NameArg,
    url: UrlOption = "http://127.0.0.1:8787",
    token: TokenOption = None,
    account: AccountOption = "default",
    json_: JsonOption = False,
) -> None:
    """Show a workflow, its latest version, schedules and instance counts."""
    with connect(url, token, account) as client:
        workflow = client.call("GET", client.workflows(name))
        versions = client.call("GET", client.workflows(name) + "/versions") or []
    latest: dict[str, Any] | None = versions[0] if versions else None
    if json_:
        render.print_json({**workflow, "latest_version": latest})
    else:
        render.workflow_detail(workflow, latest)
        cap = workflow.get("concurrency")
        if cap:
            # Only a capped workflow's answer carries it (a Stepstone addition).
            render.console.print(
                f"[bold]Concurrency[/bold]  {cap.get('running')} running / limit"
                f" {cap.get('limit')}, {cap.get('queued')} waiting for a slot"
            )


@app.command()
def delete(
    name: NameArg,
    url: UrlOption = "http://127.0.0.1:8787",
    token: TokenOption = None,
    account: AccountOption = "default",
    json_: JsonOption = False,
) -> None:
    """Delete a workflow and all its instances (running ones are stopped)."""
    with connect(url, token, account) as client:
        result = client.call("DELETE", client.workflows(name))
    if json_:
        render.print_json(result)
    else:
        render.info(f"Workflow {name!r} has been deleted")


@app.command()
def trigger(
    name: NameArg,
    params: Annotated[
        str, typer.Argument(help='Params as a JSON string, e.g. \'{"sku": "A1"}\'.')
    ] = "",
    instance_id: Annotated[
        str | None, typer.Option("--id", help="Instance id (default: a random UUID).")
    ] = None,
    url: UrlOption = "http://127.0.0.1:8787",
    token: TokenOption = None,
    account: AccountOption = "default",
    json_: JsonOption = False,
) -> None:
    """Create an instance of a workflow."""
    body: dict[str, Any] = {}
    if instance_id is not None:
        body["instance_id"] = instance_id
    if params:
        body["params"] = parse_json_arg(params, "PARAMS")
    with connect(url, token, account) as client:
        result = client.call("POST", client.instances(name), json_body=body)
    if json_:
        render.print_json(result)
    else:
        render.info(f'Workflow instance "{result.get("id")}" has been queued')
