"""Human output: rich tables, the instance step timeline, JSON for scripts, errors on stderr."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from stepstone.authoring.durations import InvalidDurationError, format_duration, parse_duration

# Piped output is read by people too (CI logs); 80 columns would fold every table.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
console = Console(highlight=False, width=_WIDTH)
err_console = Console(stderr=True, highlight=False)

STATUS_STYLE = {
    "queued": ("⏳", "Queued", "cyan"),
    "running": ("▶", "Running", "blue"),
    "paused": ("⏸", "Paused", "yellow"),
    "waitingForPause": ("⏱", "Waiting for pause", "yellow"),
    "waiting": ("⏰", "Waiting", "cyan"),
    "rollingBack": ("↩", "Rolling back", "magenta"),
    "errored": ("❌", "Errored", "red"),
    "terminated": ("🚫", "Terminated", "red"),
    "complete": ("✅", "Completed", "green"),
}
INSTANCE_STATUSES = tuple(STATUS_STYLE)


def error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def info(message: str) -> None:
    console.print(escape(message), soft_wrap=True)


def print_json(value: Any) -> None:
    """Raw JSON on stdout, never wrapped or styled, so scripts can parse it."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def status_text(status: str | None) -> Text:
    icon, label, style = STATUS_STYLE.get(status or "", ("❓", status or "unknown", "dim"))
    return Text(f"{icon} {label}", style=style)


def parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def when(value: Any) -> str:
    moment = parse_time(value)
    if moment is None:
        return "" if value in (None, "") else str(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(start: Any, end: Any) -> str:
    begin, finish = parse_time(start), parse_time(end)
    if begin is None or finish is None:
        return ""
    return human_duration(finish - begin)


def human_duration(delta: timedelta) -> str:
    return format_duration(int(delta.total_seconds() * 1000))


def truncate(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if limit > 0 and len(text) > limit:
        return text[:limit] + f"… ({len(text) - limit} more chars)"
    return text


def error_text(err: Any) -> str:
    if not err:
        return ""
    if isinstance(err, Mapping):
        name, message = err.get("name"), err.get("message")
        return f"{name}: {message}" if name else str(message)
    return str(err)


# --- workflows -----------------------------------------------------------------------------


def counts_text(counts: Mapping[str, int] | None) -> str:
    if not counts:
        return ""
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n)


def workflows_table(workflows: Sequence[Mapping[str, Any]]) -> None:
    table = Table(title="Workflows", title_justify="left")
    for column in ("Name", "Script name", "Class name", "Created", "Modified", "Instances"):
        table.add_column(column)
    table.add_column("Schedules")
    for wf in workflows:
        table.add_row(
            escape(str(wf.get("name"))),
            escape(str(wf.get("script_name", ""))),
            escape(str(wf.get("class_name", ""))),
            when(wf.get("created_on")),
            when(wf.get("modified_on")),
            counts_text(wf.get("instances")),
            escape(", ".join(s.get("cron", "") for s in wf.get("schedules") or [])),
        )
    console.print(table)


def workflow_detail(wf: Mapping[str, Any], version: Mapping[str, Any] | None) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, Any]] = [
        ("Name", wf.get("name")),
        ("Id", wf.get("id")),
        ("Script name", wf.get("script_name")),
        ("Class name", wf.get("class_name")),
        ("Created", when(wf.get("created_on"))),
        ("Modified", when(wf.get("modified_on"))),
        ("Last triggered", when(wf.get("triggered_on")) or "never"),
    ]
    if version:
        rows += [
            ("Latest version", version.get("id")),
            ("Version created", when(version.get("created_on"))),
            ("Language", version.get("language")),
        ]
        limits = version.get("limits") or {}
        if limits.get("steps"):
            rows.append(("Step limit", limits["steps"]))
        retention = version.get("default_retention") or {}
        for key, label in (
            ("success_retention", "Success retention"),
            ("error_retention", "Error retention"),
        ):
            if retention.get(key) is not None:
                rows.append((label, human_duration(timedelta(milliseconds=retention[key]))))
    for label, value in rows:
        table.add_row(label, escape("" if value is None else str(value)))
    console.print(table)
    schedules = wf.get("schedules") or []
    if schedules:
        sched = Table(title="Schedules", title_justify="left")
        sched.add_column("Cron")
        sched.add_column("Next instance")
        for item in schedules:
            sched.add_row(escape(str(item.get("cron"))), when(item.get("next_instance")))
        console.print(sched)
    counts = wf.get("instances") or {}
    if any(counts.values()):
        table = Table(title="Instances", title_justify="left")
        table.add_column("Status")
        table.add_column("Count", justify="right")
        for status, n in counts.items():
            if n:
                table.add_row(status_text(status), str(n))
        console.print(table)


# --- instances -----------------------------------------------------------------------------


def instances_table(instances: Sequence[Mapping[str, Any]], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("Instance ID", "Version", "Created", "Modified", "Status", "Trigger"):
        table.add_column(column)
    for item in instances:
        table.add_row(
            escape(str(item.get("id"))),
            escape(str(item.get("version_id", ""))),
            when(item.get("created_on")),
            when(item.get("modified_on")),
            status_text(item.get("status")),
            escape(str(item.get("trigger_source", ""))),
        )
    console.print(table)


def step_state(step: Mapping[str, Any], ended: bool = False) -> Text:
    kind = step.get("type")
    if kind in ("step", "rollback"):
        success = step.get("success")
        if success is None:
            return Text("▶ Running", style="blue")
        return Text("✅ Success", style="green") if success else Text("❌ Failed", style="red")
    if kind in ("sleep", "waitForEvent"):
        if step.get("error"):
            return Text("❌ " + error_text(step["error"]), style="red")
        if step.get("finished"):
            return Text("✅ Done", style="green")
        if ended:
            return Text("— not finished", style="dim")
        return Text(f"⏰ Waiting until {when(step.get('end'))}", style="cyan")
    return Text("")


def retries_at(step: Mapping[str, Any]) -> datetime | None:
    """When a step between attempts tries again: last failed attempt end + the retry delay."""
    attempts = step.get("attempts") or []
    if step.get("success") is not None or not attempts or attempts[-1].get("success") is not False:
        return None
    delay = ((step.get("config") or {}).get("retries") or {}).get("delay")
    end = parse_time(attempts[-1].get("end"))
    if end is None or delay is None or delay == "[dynamic]":
        return None
    try:
        ms = parse_duration(delay)
    except InvalidDurationError:
        return None
    return end + timedelta(milliseconds=ms)


def instance_detail(
    instance_id: str, detail: Mapping[str, Any], *, step_output: bool, limit: int
) -> None:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    trigger = (detail.get("trigger") or {}).get("source")
    rows: list[tuple[str, Any]] = [
        ("Instance", escape(instance_id)),
        ("Status", status_text(detail.get("status"))),
        ("Trigger", escape(str(trigger or ""))),
        ("Version", escape(str(detail.get("versionId") or ""))),
        ("Queued", when(detail.get("queued"))),
        ("Start", when(detail.get("start"))),
        ("End", when(detail.get("end"))),
    ]
    if detail.get("start") and detail.get("end"):
        rows.append(("Duration", duration(detail.get("start"), detail.get("end"))))
    schedule = detail.get("schedule")
    if schedule:
        rows.append(
            ("Schedule", escape(f"{schedule.get('cron')} at {when(schedule.get('scheduledTime'))}"))
        )
    steps = detail.get("steps") or []
    last_ok = last_successful_step(steps)
    if last_ok:
        rows.append(("Last successful step", escape(last_ok)))
    if detail.get("error"):
        rows.append(("Error", Text(error_text(detail["error"]), style="red")))
    rollback = detail.get("rollback")
    if rollback:
        outcome = str(rollback.get("outcome"))
        if rollback.get("error"):
            outcome += f" ({error_text(rollback['error'])})"
        rows.append(("Rollback", escape(outcome)))
    if step_output and detail.get("output") not in (None, ""):
        rows.append(("Output", escape(truncate(detail["output"], limit))))
    rows += link_rows(detail.get("stepstone") or {})
    for label, value in rows:
        head.add_row(label, value)
    console.print(head)
    if steps:
        ended = detail.get("status") in ("complete", "errored", "terminated")
        console.print(timeline(steps, step_output=step_output, limit=limit, ended=ended))
    else:
        console.print(Text(f"{detail.get('step_count', 0) or 'No'} steps recorded", style="dim"))


def link_rows(links: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Child workflows (an extension): the parent and each child, as ``workflow/id (status)``."""
    rows: list[tuple[str, Any]] = []
    parent = links.get("parent")
    if parent:
        rows.append(("Parent", escape(f"{parent['workflow']}/{parent['id']} ({parent['status']})")))
    for child in links.get("children") or []:
        detached = ", detached" if child.get("detached") else ""
        text = f"{child['workflow']}/{child['id']} ({child['status']}{detached})"
        rows.append(("Child", escape(text)))
    return rows


def last_successful_step(steps: Iterable[Mapping[str, Any]]) -> str | None:
    last = None
    for step in steps:
        if (step.get("type") == "step" and step.get("success") is True) or (
            step.get("type") == "sleep" and step.get("end")
        ):
            last = str(step.get("name"))
    return last


TYPE_LABEL = {
    "step": "do",
    "sleep": "sleep",
    "waitForEvent": "event",
    "rollback": "rollback",
    "termination": "terminate",
}


def timeline(
    steps: Sequence[Mapping[str, Any]], *, step_output: bool, limit: int, ended: bool = False
) -> Table:
    table = Table(title="Steps", title_justify="left", show_lines=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("Type")
    table.add_column("Name")
    table.add_column("Start")
    table.add_column("Duration", justify="right")
    table.add_column("State")
    if step_output:
        table.add_column("Output / error", overflow="fold")
    for index, step in enumerate(steps, 1):
        kind = str(step.get("type"))
        if kind == "termination":
            source = (step.get("trigger") or {}).get("source")
            cells: list[str | Text] = [
                str(index),
                "terminate",
                "",
                "",
                "",
                Text(f"🚫 by {source}", style="red"),
            ]
            table.add_row(*cells, *([""] if step_output else []))
            continue
        state = step_state(step, ended)
        unfinished_wait = kind in ("sleep", "waitForEvent") and not step.get("finished")
        attempts = step.get("attempts") or []
        if len(attempts) > 1:
            state.append(f" ({len(attempts)} attempts)", style="dim")
        again = retries_at(step)
        if again is not None:
            state.append(f" retries at {when(again.isoformat())}", style="yellow")
        cells = [
            str(index),
            TYPE_LABEL.get(kind, kind),
            escape(str(step.get("name", ""))),
            when(step.get("start")),
            "" if unfinished_wait else duration(step.get("start"), step.get("end")),
            state,
        ]
        if step_output:
            cells.append(escape(step_cell(step, limit)))
        table.add_row(*cells)
    return table


def step_cell(step: Mapping[str, Any], limit: int) -> str:
    attempts = step.get("attempts") or []
    errors = [error_text(a.get("error")) for a in attempts if a.get("error")]
    if step.get("type") == "waitForEvent" and step.get("error"):
        errors.append(error_text(step["error"]))
    output = step.get("output")
    parts = []
    if output is not None:
        parts.append(truncate(output, limit))
    if errors and step.get("success") is not True:
        parts.append(f"last error: {errors[-1]}")
    return "\n".join(parts)


# --- tokens --------------------------------------------------------------------------------


def tokens_table(tokens: Sequence[Any]) -> None:
    table = Table(title="API tokens", title_justify="left")
    for column in ("Id", "Name", "Permissions", "Accounts", "Created", "Revoked"):
        table.add_column(column)
    for token in tokens:
        table.add_row(
            token.id,
            escape(token.name),
            escape(", ".join(token.permissions)),
            escape(", ".join(token.accounts) if token.accounts is not None else "all"),
            when(token.created_on),
            when(token.revoked_on) if token.revoked_on else "",
        )
    console.print(table)
