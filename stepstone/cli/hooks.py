"""``stepstone hooks``: a workflow's lifecycle webhooks and their deliveries (extension)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

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
from stepstone.cli.instances import NameArg

app = typer.Typer(help="Lifecycle webhooks (a Stepstone extension).", no_args_is_help=True)


def _path(client: Any, name: str) -> str:
    return f"{client.workflows(name)}/stepstone/hooks"


@app.command("list")
def list_hooks(
    name: NameArg,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """A workflow's webhooks."""
    with connect(url, token, account) as client:
        result = client.call("GET", _path(client, name))
    if json_:
        render.print_json(result)
        return
    if not result:
        render.info(f"No webhooks on {name!r}.")
    for hook in result:
        wait = hook.get("waitForEventLongerThanMs")
        extra = f" (waits over {wait} ms)" if wait else ""
        render.info(
            f"{hook['id']}  {hook['url']}  {','.join(hook['events'])}{extra}  [{hook['source']}]"
        )


@app.command("add")
def add(
    name: NameArg,
    target: Annotated[str, typer.Argument(help="The URL to POST to.", show_default=False)],
    event: Annotated[
        list[str],
        typer.Option(
            "--event",
            "-e",
            help="errored, complete, terminated, paused, rolledBack or waitingForEvent;"
            " repeat for more.",
            show_default=False,
        ),
    ],
    secret: Annotated[
        str | None, typer.Option("--secret", help="Signing secret (default: generated).")
    ] = None,
    wait_longer_than: Annotated[
        str | None,
        typer.Option("--wait-longer-than", help='For waitingForEvent, e.g. "1 hour".'),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Add a webhook; its secret is shown once."""
    body: dict[str, Any] = {"url": target, "events": event}
    if secret is not None:
        body["secret"] = secret
    if wait_longer_than is not None:
        body["waitForEventLongerThan"] = wait_longer_than
    with connect(url, token, account) as client:
        result = client.call("POST", _path(client, name), json_body=body)
    if json_:
        render.print_json(result)
        return
    render.info(f"Webhook {result['id']} added; its signing secret (shown once):")
    render.info(result["secret"])


@app.command("delete")
def delete(
    name: NameArg,
    hook_id: Annotated[str, typer.Argument(help="The webhook's id.", show_default=False)],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
) -> None:
    """Remove a webhook and its deliveries."""
    with connect(url, token, account) as client:
        client.call("DELETE", f"{_path(client, name)}/{seg(hook_id)}")
    render.info(f"Webhook {hook_id} deleted")


@app.command("deliveries")
def deliveries(
    name: NameArg,
    hook: Annotated[str | None, typer.Option("--hook", help="Only this webhook's.")] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="pending, delivered or failed.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many, newest first.")] = 50,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Deliveries, newest first, with each attempt's answer."""
    params: dict[str, Any] = {"limit": limit}
    if hook:
        params["hook"] = hook
    if state:
        params["state"] = state
    with connect(url, token, account) as client:
        result = client.call("GET", f"{_path(client, name)}/deliveries", params=params)
    if json_:
        render.print_json(result)
        return
    if not result:
        render.info("No deliveries.")
    for d in result:
        tail = d["last_error"] or ""
        if d["state"] == "pending" and d["next_attempt_on"]:
            tail = f"{tail}; next try {d['next_attempt_on']}".lstrip("; ")
        render.info(
            f"{d['id']}  {d['state']:<9} {d['event']:<15} {d['instance']}  "
            f"attempts={d['attempts']}  {d['at']}  {tail}".rstrip()
        )


@app.command("resend")
def resend(
    name: NameArg,
    delivery: Annotated[str, typer.Argument(help="The delivery's id (whd_N).", show_default=False)],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
) -> None:
    """Send a delivery again now (a failed one included)."""
    with connect(url, token, account) as client:
        client.call("POST", f"{_path(client, name)}/deliveries/{seg(delivery)}/resend")
    render.info(f"Delivery {delivery} queued to send again")
