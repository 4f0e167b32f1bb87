"""``stepstone instances bulk``: one action on every instance a filter selects (extension).

The server runs the job (durably, paging); this command shows the count first, asks before
acting, then follows the job's progress. Interrupting it does not stop the job: it says how to
follow or cancel it.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Annotated, Any

import typer

from stepstone.cli import render
from stepstone.cli.client import (
    DEFAULT_ACCOUNT,
    DEFAULT_URL,
    AccountOption,
    Client,
    JsonOption,
    TokenOption,
    UrlOption,
    connect,
    fail,
    seg,
    usage,
)
from stepstone.cli.instances import ListStatus, normalize_date

POLL_SECONDS = 0.5
ENDED = ("complete", "failed", "cancelled")
ACTIONS = ("pause", "resume", "terminate", "restart", "delete", "retry-errored")
REASONS_SHOWN = 10


def register(app: typer.Typer) -> None:
    app.command("bulk")(bulk)
    app.command("bulk-status")(bulk_status)
    app.command("bulk-cancel")(bulk_cancel)


def _bulk_path(client: Client, workflow: str) -> str:
    return client.workflows(workflow) + "/stepstone/bulk"


def _job_path(client: Client, job_id: str) -> str:
    return f"/accounts/{seg(client.account)}/stepstone/bulk/{seg(job_id)}"


def bulk(
    workflow: Annotated[str, typer.Argument(help="Workflow name.", show_default=False)],
    action: Annotated[str, typer.Argument(help=" | ".join(ACTIONS), show_default=False)],
    status: Annotated[
        list[ListStatus] | None, typer.Option("--status", help="Only this status (repeatable).")
    ] = None,
    created_after: Annotated[
        str | None, typer.Option(help="Created at or after (ISO 8601, UTC).")
    ] = None,
    created_before: Annotated[
        str | None, typer.Option(help="Created before (ISO 8601, UTC).")
    ] = None,
    id_prefix: Annotated[str | None, typer.Option(help="Instance ids starting so.")] = None,
    error_name: Annotated[
        str | None, typer.Option(help="Errored with this error name, e.g. NonRetryableError.")
    ] = None,
    from_step: Annotated[
        str | None, typer.Option(help="restart: restart from this step (by name).")
    ] = None,
    rollback: Annotated[bool, typer.Option(help="terminate: run rollback handlers.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count and show matches; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="Start the job and return; do not follow it.")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Act on every instance of WORKFLOW that matches the filter, as a durable server job.

    Shows how many match, asks (unless --yes), then follows the job with a progress bar.
    """
    if action not in ACTIONS:
        usage(f"ACTION must be one of {', '.join(ACTIONS)}", "ACTION")
    body: dict[str, Any] = {
        "action": action,
        "filter": {
            "status": [s.value for s in status or []],
            "created_after": normalize_date(created_after, end=False) if created_after else None,
            "created_before": (
                normalize_date(created_before, end=False) if created_before else None
            ),
            "id_prefix": id_prefix,
            "error_name": error_name,
        },
    }
    # The API takes each option only with its action, and says so if given another.
    if rollback:
        body["rollback"] = True
    if from_step is not None:
        body["from_step"] = from_step
    with connect(url, token, account) as client:
        path = _bulk_path(client, workflow)
        preview = client.call("POST", path, json_body={**body, "dry_run": True})
        matched = int(preview["matched"])
        if dry_run:
            if json_:
                render.print_json(preview)
                return
            render.info(f"{matched} instance{'s' if matched != 1 else ''} of {workflow} match.")
            if preview["instances"]:
                render.instances_table(preview["instances"], f"First {action} targets")
            return
        if matched == 0 and not json_:
            render.warn(f"No instances of {workflow!r} match; nothing to do.")
            return
        if not yes:
            if not sys.stdin.isatty():
                fail(f"{matched} instances would be affected; pass --yes to {action} them")
            if not typer.confirm(f"{action} {matched} instances of {workflow}?", default=False):
                raise typer.Exit(1)
        job = client.call("POST", path, json_body=body)
        if detach:
            _show(job, json_)
            return
        try:
            job = _follow(client, job, quiet=json_)
        except KeyboardInterrupt:
            render.warn(
                f"Job {job['id']} keeps running on the server: `stepstone instances bulk-status"
                f" {job['id']}` follows it, `stepstone instances bulk-cancel {job['id']}` stops it."
            )
            raise typer.Exit(130) from None
        reasons = _reasons(client, job)
    _show(job, json_, reasons)
    if job["status"] != "complete" or job["failed"]:
        raise typer.Exit(1)


def bulk_status(
    job_id: Annotated[str, typer.Argument(help="Bulk job id.", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow it to its end.")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Show a bulk job's progress and summary."""
    with connect(url, token, account) as client:
        job = client.call("GET", _job_path(client, job_id))
        if follow:
            job = _follow(client, job, quiet=json_)
        reasons = _reasons(client, job)
    _show(job, json_, reasons)


def bulk_cancel(
    job_id: Annotated[str, typer.Argument(help="Bulk job id.", show_default=False)],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Stop a bulk job before its next page (what it did stays done)."""
    with connect(url, token, account) as client:
        job = client.call("POST", _job_path(client, job_id) + "/cancel")
    _show(job, json_)


def _follow(client: Client, job: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tally]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=render.err_console,
        transient=True,
        disable=quiet,
    )
    with progress:
        task = progress.add_task(
            f"{job['action']} {job['workflow']}", total=max(job["matched"], 1), tally=""
        )
        while True:
            tally = f"skipped {job['skipped']} failed {job['failed']}"
            total = max(job["matched"], job["processed"], 1)
            progress.update(task, completed=job["processed"], total=total, tally=tally)
            if job["status"] in ENDED:
                return job
            time.sleep(POLL_SECONDS)
            job = client.call("GET", _job_path(client, job["id"]))


def _reasons(client: Client, job: dict[str, Any]) -> dict[str, Counter[str]]:
    """The most common reasons for skips and failures (first pages only)."""
    found: dict[str, Counter[str]] = {}
    for outcome in ("failed", "skipped"):
        if job.get(outcome):
            items = client.call(
                "GET",
                _job_path(client, job["id"]) + "/items",
                params={"outcome": outcome, "per_page": 500},
            )
            found[outcome] = Counter(str(i.get("reason")) for i in items or [])
    return found


def _show(job: dict[str, Any], json_: bool, reasons: dict[str, Counter[str]] | None = None) -> None:
    if json_:
        render.print_json(job)
        return
    line = (
        f"Bulk {job['action']} of {job['workflow']}: {job['status']};"
        f" done {job['done']}, skipped {job['skipped']}, failed {job['failed']}"
        f" (matched {job['matched']} at the start). Job {job['id']}."
    )
    if job["status"] == "complete" and not job["failed"]:
        render.info(line)
    else:
        render.warn(line)
    if job.get("error"):
        render.error(str(job["error"]))
    for outcome, counter in (reasons or {}).items():
        for reason, count in counter.most_common(REASONS_SHOWN):
            render.warn(f"  {outcome} {count}: {reason}")
