"""``stepstone instances`` (also ``stepstone workflows instances``): wrangler's instance commands,
plus ``step`` for one step's full output."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime
from datetime import time as dtime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stepstone.cli import render
from stepstone.cli.client import (
    DEFAULT_ACCOUNT,
    DEFAULT_URL,
    AccountOption,
    ApiError,
    Binary,
    Client,
    CliError,
    JsonOption,
    TokenOption,
    UrlOption,
    connect,
    humanize_key,
    parse_json,
    seg,
    usage,
)
from stepstone.errors import StepNotFound

if TYPE_CHECKING:
    from rich.progress import Progress

app = typer.Typer(help="Inspect and control workflow instances.", no_args_is_help=True)

BATCH = 100
TERMINATE_POLL_SECONDS = 0.5

NameArg = Annotated[str, typer.Argument(help="Workflow name.", show_default=False)]
IdArg = Annotated[
    str, typer.Argument(help="Instance id, or 'latest' for the newest.", show_default=False)
]


class ListStatus(StrEnum):
    queued = "queued"
    running = "running"
    paused = "paused"
    errored = "errored"
    terminated = "terminated"
    complete = "complete"
    waiting = "waiting"
    waitingForPause = "waitingForPause"


class TerminableStatus(StrEnum):
    queued = "queued"
    running = "running"
    paused = "paused"
    waitingForPause = "waitingForPause"
    waiting = "waiting"


class StepType(StrEnum):
    do = "do"
    sleep = "sleep"
    waitForEvent = "waitForEvent"


class RestartEvents(StrEnum):
    drop = "drop"
    replay = "replay"


class OutputType(StrEnum):
    step = "step"
    waitForEvent = "waitForEvent"


def other_kind_hint(steps: list[dict[str, Any]], step_name: str, asked: OutputType) -> str | None:
    """When ``step_name`` is in the instance as another kind of step, what to ask instead."""
    kinds = {entry.get("type") for entry in steps if entry.get("name") == step_name}
    if asked == OutputType.step and OutputType.waitForEvent.value in kinds:
        return f"{step_name!r} is a waitForEvent: add --type waitForEvent"
    if asked == OutputType.waitForEvent and OutputType.step.value in kinds:
        return f"{step_name!r} is a step.do: use --type step (the default)"
    if "sleep" in kinds:
        return f"{step_name!r} is a sleep, which has no output (see `instances describe`)"
    return None


def normalize_date(value: str, *, end: bool) -> str:
    """wrangler's normalisation: a bare date covers the whole day, times become UTC ISO."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = datetime.fromisoformat(value).date()
            moment = datetime.combine(day, dtime.max if end else dtime.min, UTC)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        usage(f"{value!r} is not an ISO 8601 date", "--date-end" if end else "--date-start")
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@app.command("list")
def list_instances(
    name: NameArg,
    status: Annotated[
        ListStatus | None, typer.Option(help="Only instances in this status.")
    ] = None,
    page: Annotated[int, typer.Option(min=1, help="Page number (follows cursors).")] = 1,
    per_page: Annotated[
        int | None, typer.Option(min=1, max=100, help="Instances per page.")
    ] = None,
    date_start: Annotated[
        str | None, typer.Option(help="Created at or after (ISO 8601, UTC).")
    ] = None,
    date_end: Annotated[
        str | None, typer.Option(help="Created at or before (ISO 8601, UTC).")
    ] = None,
    reverse: Annotated[bool, typer.Option("--reverse", help="Oldest first.")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """List a workflow's instances, newest first."""
    params: dict[str, Any] = {
        "status": status.value if status else None,
        "date_start": normalize_date(date_start, end=False) if date_start else None,
        "date_end": normalize_date(date_end, end=True) if date_end else None,
        "per_page": per_page,
    }
    found: list[dict[str, Any]] = []
    with connect(url, token, account) as client:
        page_data = client.call_page("GET", client.instances(name), params=params)
        for _ in range(page - 1):
            cursor = page_data.info.get("cursor")
            if not cursor:
                page_data = None
                break
            page_data = client.call_page(
                "GET", client.instances(name), params={**params, "cursor": cursor}
            )
        if page_data is not None:
            found = list(page_data.result or [])
    found.sort(key=lambda i: str(i.get("created_on", "")), reverse=not reverse)
    if json_:
        render.print_json(found)
    elif not found:
        render.warn(
            f"No instances found for workflow {name!r}" + (f" on page {page}" if page > 1 else "")
        )
    else:
        render.instances_table(found, f"Instances of {name}")


@app.command()
def describe(
    name: NameArg,
    instance_id: IdArg = "latest",
    step_output: Annotated[
        bool, typer.Option("--step-output/--no-step-output", help="Show step outputs.")
    ] = True,
    truncate_output_limit: Annotated[
        int, typer.Option(min=0, help="Truncate outputs to this many characters (0: never).")
    ] = 5000,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Show an instance: status, timing, error, output and the step timeline."""
    with connect(url, token, account) as client:
        instance_id = client.resolve(name, instance_id)
        detail = client.call("GET", client.instances(name, instance_id))
    if json_:
        render.print_json(detail)
    else:
        render.instance_detail(
            instance_id, detail, step_output=step_output, limit=truncate_output_limit
        )


@app.command()
def step(
    name: NameArg,
    instance_id: IdArg,
    step_name: Annotated[
        str,
        typer.Option(
            "--step", help="Step name with its counter suffix, e.g. 'fetch-1'.", show_default=False
        ),
    ],
    step_type: Annotated[OutputType, typer.Option("--type", help="Kind of step.")] = (
        OutputType.step
    ),
    attempt: Annotated[int | None, typer.Option(min=1, help="That attempt's outcome.")] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Save the output to this file.", dir_okay=False),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Print a step's full output, or save it (byte streams too) to a file."""
    with connect(url, token, account) as client:
        instance_id = client.resolve(name, instance_id)
        try:
            result = client.call(
                "GET",
                client.instances(name, instance_id) + "/step",
                params={"name": step_name, "type": step_type.value, "attempt": attempt},
                allow_binary=True,
            )
        except ApiError as exc:
            if exc.code != StepNotFound.code:
                raise
            detail = client.call("GET", client.instances(name, instance_id))
            hint = other_kind_hint(detail.get("steps") or [], step_name, step_type)
            if hint is None and not re.search(r"-\d+$", step_name):
                hint = f"step names carry their counter suffix, e.g. '{step_name}-1'"
            if hint is None:
                raise
            raise CliError(f"{exc}; {hint}") from None
    if isinstance(result, Binary):
        if output is not None:
            output.write_bytes(result.content)
            render.err_console.print(f"Saved {len(result.content)} bytes to {output}")
        elif not sys.stdout.isatty():
            sys.stdout.buffer.write(result.content)
            sys.stdout.flush()
        else:
            render.warn(
                f"the step's output is a byte stream of {len(result.content)} bytes;"
                " save it with --output FILE or redirect stdout"
            )
        return
    if json_:
        render.print_json(result)
        return
    status, err = result.get("status"), result.get("error")
    if status != "complete" or err:
        message = f"step status: {status}"
        if err:
            message += f"; error: {render.error_text(err)}"
        render.err_console.print(message)
    value = result.get("output")
    if output is not None:
        text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
        output.write_text(text)
        render.err_console.print(f"Saved the output to {output}")
    else:
        render.print_json(value)


@app.command("send-event")
def send_event(
    name: NameArg,
    instance_id: IdArg,
    event_type: Annotated[
        str, typer.Option("--type", help="Event type the instance waits for.", show_default=False)
    ],
    payload: Annotated[str, typer.Option(help="Event payload as JSON.")] = "{}",
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Send an event to an instance (buffered until a step waits for it)."""
    parse_json(payload, "--payload")
    with connect(url, token, account) as client:
        instance_id = client.resolve(name, instance_id)
        result = client.call(
            "POST",
            client.instances(name, instance_id) + f"/events/{seg(event_type)}",
            content=payload.encode(),
        )
    if json_:
        render.print_json(result)
    else:
        render.info(f"Event {event_type!r} sent to instance {instance_id!r}")


def _change(
    action: str,
    body: dict[str, Any],
    name: str,
    instance_id: str,
    url: str,
    token: str | None,
    account: str,
    json_: bool,
    extension: str | None = None,
) -> None:
    """PATCH ``.../status`` with ``body``; with ``extension``, POST it to that Stepstone
    extension route of the instance (``.../stepstone/<extension>``) instead."""
    with connect(url, token, account) as client:
        instance_id = client.resolve(name, instance_id)
        path = client.instances(name, instance_id)
        if extension is None:
            result = client.call("PATCH", path + "/status", json_body=body)
        else:
            result = client.call("POST", f"{path}/stepstone/{extension}", json_body=body)
    if json_:
        render.print_json(result)
        return
    status = (result or {}).get("status")
    suffix = f" (status: {status})" if status else ""
    render.info(f"Instance {instance_id!r} {action}{suffix}")


@app.command()
def pause(
    name: NameArg,
    instance_id: IdArg,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Pause an instance (a running step finishes first)."""
    _change("paused", {"status": "pause"}, name, instance_id, url, token, account, json_)


@app.command()
def resume(
    name: NameArg,
    instance_id: IdArg,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Resume a paused instance."""
    _change("resumed", {"status": "resume"}, name, instance_id, url, token, account, json_)


@app.command()
def terminate(
    name: NameArg,
    instance_id: IdArg,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Run rollback handlers before stopping.")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Terminate an instance."""
    body: dict[str, Any] = {"status": "terminate"}
    if rollback:
        body["rollback"] = True
    _change("terminated", body, name, instance_id, url, token, account, json_)


@app.command()
def restart(
    name: NameArg,
    instance_id: IdArg,
    from_step_name: Annotated[
        str | None, typer.Option(help="Restart from this step (name without counter suffix).")
    ] = None,
    from_step_count: Annotated[
        int | None, typer.Option(min=1, help="Which occurrence of the step (default 1).")
    ] = None,
    from_step_type: Annotated[
        StepType | None, typer.Option(help="Kind of the step (default do).")
    ] = None,
    events: Annotated[
        RestartEvents | None,
        typer.Option(
            help="What becomes of the events the dropped steps had received: drop them"
            " (Cloudflare's restart) or replay them to the new run's waits (an extension)."
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Restart an instance from the beginning, or from a step (earlier steps are kept)."""
    body: dict[str, Any] = {"status": "restart"}
    if from_step_name is None:
        if from_step_count is not None or from_step_type is not None:
            usage(
                "--from-step-count and --from-step-type need --from-step-name", "--from-step-name"
            )
        if events is not None:
            usage("--events needs --from-step-name (a restart from a step)", "--from-step-name")
    else:
        start: dict[str, Any] = {"name": from_step_name}
        if from_step_count is not None:
            start["count"] = from_step_count
        if from_step_type is not None:
            start["type"] = from_step_type.value
        body["from"] = start
    if events is None:
        _change("restarted", body, name, instance_id, url, token, account, json_)
        return
    # Only the extension route takes `events`; Cloudflare's PATCH .../status does not.
    body = {"from": body["from"], "events": events.value}
    action = f"restarted (events: {events.value})"
    _change(action, body, name, instance_id, url, token, account, json_, extension="restart")


def _progress() -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=render.err_console,
        transient=True,
    )


@app.command()
def delete(
    name: NameArg,
    instance_ids: Annotated[
        list[str] | None,
        typer.Argument(help="Instance ids ('latest' allowed).", show_default=False),
    ] = None,
    filename: Annotated[
        Path | None,
        typer.Option(
            help="A JSON file holding an array of instance ids.", exists=True, dir_okay=False
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Delete instances and all their data (running ones stop without rollback).

    More than 100 ids are sent in batches of 100, with a progress bar.
    """
    ids = list(instance_ids or [])
    if filename is not None:
        loaded = parse_json(filename.read_text(), "--filename")
        if not isinstance(loaded, list) or not all(isinstance(i, str) for i in loaded):
            usage("the file must hold a JSON array of instance id strings", "--filename")
        ids += loaded
    if not ids:
        usage("give at least one instance id, or --filename", "INSTANCE_IDS")
    deleted: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    with connect(url, token, account) as client:
        latest = client.resolve(name, "latest") if "latest" in ids else None
        ids = [latest if i == "latest" and latest else i for i in ids]
        batches = [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]
        with _progress() as progress:
            task = progress.add_task("Deleting", total=len(ids), visible=len(batches) > 1)
            for batch in batches:
                result = client.call(
                    "POST", client.instances(name) + "/batch/delete", json_body={"instances": batch}
                )
                deleted += result.get("deleted") or []
                errors += result.get("errors") or []
                progress.advance(task, len(batch))
    if json_:
        render.print_json({"deleted": deleted, "errors": errors})
    else:
        if deleted:
            render.info(f"Deleted {len(deleted)} instance{'s' if len(deleted) != 1 else ''}")
        for item in errors:
            detail = humanize_key(str(item.get("message") or ""))
            render.error(
                f"instance {item.get('id')!r} was not deleted: {detail} (code {item.get('code')})"
            )
    if errors:
        raise typer.Exit(1)


def _count(client: Client, name: str, status: str | None) -> int:
    counts = client.call("GET", client.workflows(name)).get("instances") or {}
    statuses = [status] if status else [s.value for s in TerminableStatus]
    return sum(int(counts.get(s) or 0) for s in statuses)


@app.command("terminate-all")
def terminate_all(
    name: NameArg,
    status: Annotated[
        TerminableStatus | None, typer.Option(help="Only instances in this status.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the job with a progress bar.")
    ] = True,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    account: AccountOption = DEFAULT_ACCOUNT,
    json_: JsonOption = False,
) -> None:
    """Terminate every unfinished instance of a workflow (a server-side job)."""
    status_value = status.value if status else None
    with connect(url, token, account) as client:
        before = _count(client, name, status_value) if wait and not json_ else 0
        result = client.call(
            "PUT", client.instances(name) + "/terminate", params={"status": status_value}
        )
        started = (result or {}).get("status") == "ok"
        if json_:
            render.print_json(result)
            return
        if not started:
            render.warn(f"a terminate-all job for workflow {name!r} is already running")
            return
        render.info(f"The terminate-all job for workflow {name!r} has been started")
        if not wait:
            return
        with _progress() as progress:
            task = progress.add_task("Terminating", total=before or None)
            while True:
                job = client.call("GET", client.instances(name) + "/terminate")
                left = _count(client, name, status_value)
                progress.update(task, completed=max(0, before - left))
                if (job or {}).get("status") != "running":
                    break
                time.sleep(TERMINATE_POLL_SECONDS)
    render.info(f"Terminated {max(0, before - left)} instance(s); {left} left unfinished")
