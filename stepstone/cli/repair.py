"""``stepstone instances repair``: set a step's recorded output, optionally resume (extension).

For an errored or paused instance: ``--output JSON`` becomes the step's recorded result, as
if its last attempt had returned it; with ``--resume`` the instance runs on from the record
without running that step again.
"""

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
    parse_json,
)
from stepstone.cli.instances import IdArg, NameArg


def register(app: typer.Typer) -> None:
    app.command("repair")(repair)


def repair(
    name: NameArg,
    instance_id: IdArg,
    step: Annotated[
        str,
        typer.Option("--step", help='The step as recorded, e.g. "charge-1".', show_default=False),
    ],
    output: Annotated[
        str, typer.Option("--output", help="Its new recorded output, as JSON.", show_default=False)
    ],
    resume: Annotated[
        bool, typer.Option("--resume", help="Queue the instance to run on from the record.")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Repair a failed or completed step of an errored or paused instance."""
    value = parse_json(output, "--output")
    with connect(url, token, account) as client:
        instance_id = client.resolve(name, instance_id)
        body: dict[str, Any] = {"step": step, "output": value, "resume": resume}
        result = client.call(
            "POST", client.instances(name, instance_id) + "/stepstone/repair", json_body=body
        )
    if json_:
        render.print_json(result)
        return
    previous = result.get("previous") or {}
    was = "succeeded" if previous.get("success") else "failed"
    error = (previous.get("error") or {}).get("message")
    render.info(
        f"Step {result['step']!r} of {instance_id!r} repaired (it had {was}"
        + (f": {error}" if error else "")
        + f"); instance {result['status']}"
    )
    if not resume and result["status"] == "errored":
        render.info("Run again with --resume to run on from the repaired step.")
