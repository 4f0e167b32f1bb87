"""``stepstone replay``: does the code in the config still agree with recorded instances?

Each selected instance (from a store, or from a history exported by ``stepstone instances
export``) is replayed against the current code without running any step and without writing
anything. Exit code 0 when every instance agrees, 1 on any divergence (a deploy gate in CI),
2 on a usage error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from stepstone.authoring.entrypoint import WorkflowEntrypoint
from stepstone.cli import render
from stepstone.cli.client import fail, usage
from stepstone.cli.server_cmds import (
    ConfigOption,
    explained_startup,
    open_store,
    redact,
    resolve_config,
    sqlite_file,
)
from stepstone.engine.recorded import HistoryFileError, RecordedInstance, decode_export, select
from stepstone.engine.replay_check import CheckEnv, ReplayVerdict, check_instance
from stepstone.loader import IMPLICIT_ATTRIBUTE, WorkflowLoadError, load_class
from stepstone.model.statuses import ALL_STATUSES
from stepstone.project import ProjectConfig, load_project
from stepstone.storage.base import Storage

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Replay the instances of this store: sqlite:///path.db, postgresql://host/db.",
        show_default=False,
    ),
]
HistoryOption = Annotated[
    Path | None,
    typer.Option(
        "--history",
        help="Replay the instances of a history exported with `stepstone instances export`.",
        show_default=False,
        dir_okay=False,
    ),
]
WorkflowOption = Annotated[
    str | None, typer.Option("--workflow", help="Only this workflow.", show_default=False)
]
InstanceOption = Annotated[
    str | None, typer.Option("--instance", help="Only this instance id.", show_default=False)
]
StatusOption = Annotated[
    str | None,
    typer.Option(
        "--status",
        help=f"Only instances in this status ({', '.join(ALL_STATUSES)}).",
        show_default=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the verdicts as JSON.")]


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)


def existing_store(db: str) -> str:
    """``db``, refused when it names a SQLite file that does not exist: reading a store must
    never create an empty one (and an empty store would make every check pass)."""
    file = sqlite_file(db)
    if file is not None and not file.exists():
        usage(f"no store at {Path.cwd() / file} ({redact(db)})", "--db")
    return db


def check_status(status: str | None) -> str | None:
    if status is not None and status not in ALL_STATUSES:
        usage(f"unknown status {status!r}; choose from {', '.join(ALL_STATUSES)}", "--status")
    return status


def replay(
    db: StoreOption = None,
    history: HistoryOption = None,
    workflow: WorkflowOption = None,
    instance: InstanceOption = None,
    status: StatusOption = None,
    config: ConfigOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Replay recorded instances against the code in the config, running no step.

    Reports per instance whether the code still agrees with the record,
    and if not, where it first diverges. Exits 1 on any divergence.
    """
    if (db is None) == (history is None):
        usage("give the recorded instances with --db URL or --history FILE (one of them)")
    check_status(status)
    if db is not None:
        existing_store(db)
    path = resolve_config(config)
    if path is None:
        usage("no project file here (stepstone.toml or wrangler.*); name one with --config")
    project = load_project(path)
    if workflow is not None and workflow not in {wf.name for wf in project.workflows}:
        usage(f"the config {path} has no workflow {workflow!r}", "--workflow")
    classes = load_classes(project)
    if history is not None:
        items = read_history(history, workflow, instance, status)
        verdicts = asyncio.run(check_all(_listed(items), classes, project, None))
    else:
        assert db is not None
        verdicts = _from_store(db, project, classes, workflow, instance, status)
    report(verdicts, as_json)
    if any(not v.agrees for v in verdicts):
        raise typer.Exit(1)


def load_classes(project: ProjectConfig) -> dict[str, type[WorkflowEntrypoint]]:
    """The config's workflow classes, imported as a worker imports them."""
    project.activate()
    classes: dict[str, type[WorkflowEntrypoint]] = {}
    for wf in project.workflows:
        try:
            cls = load_class(wf.script_name, wf.class_name)
        except WorkflowLoadError as exc:
            fail(f"workflow {wf.name!r}: {exc}", 2)
        setattr(cls, IMPLICIT_ATTRIBUTE, project.implicit_dependencies)
        classes[wf.name] = cls
    return classes


def read_history(
    path: Path, workflow: str | None, instance: str | None, status: str | None
) -> list[RecordedInstance]:
    try:
        items = decode_export(path.read_bytes(), str(path))
    except OSError as exc:
        usage(f"cannot read {path}: {exc.strerror or exc}", "--history")
    except HistoryFileError as exc:
        fail(str(exc), 2)
    return [
        item
        for item in items
        if (workflow is None or item.workflow == workflow)
        and (instance is None or item.id == instance)
        and (status is None or item.status == status)
    ]


async def _listed(items: Iterable[RecordedInstance]) -> AsyncIterator[RecordedInstance]:
    for item in items:
        yield item


def _from_store(
    db: str,
    project: ProjectConfig,
    classes: dict[str, type[WorkflowEntrypoint]],
    workflow: str | None,
    instance: str | None,
    status: str | None,
) -> list[ReplayVerdict]:
    async def main() -> list[ReplayVerdict]:
        storage = await open_store(db)
        try:
            verdicts: list[ReplayVerdict] = []
            for name in [workflow] if workflow is not None else sorted(classes):
                try:
                    items = select(
                        storage,
                        project.account_id,
                        workflow=name,
                        instance=instance,
                        status=status,
                    )
                    verdicts += await check_all(items, classes, project, storage)
                except LookupError:
                    continue  # a workflow of the config that this store never ran
            return verdicts
        finally:
            await storage.close()

    with explained_startup(db):
        return asyncio.run(main())


async def check_all(
    items: AsyncIterator[RecordedInstance],
    classes: dict[str, type[WorkflowEntrypoint]],
    project: ProjectConfig,
    storage: Storage | None,
) -> list[ReplayVerdict]:
    env = CheckEnv(project.env)
    verdicts = []
    async for item in items:
        cls = classes.get(item.workflow)
        if cls is None:
            verdicts.append(
                ReplayVerdict(
                    item.workflow,
                    item.id,
                    item.status,
                    agrees=False,
                    divergence=f"the config has no workflow {item.workflow!r}",
                    outcome="not checked",
                )
            )
            continue
        limit = next(
            (wf.limits_steps for wf in project.workflows if wf.name == item.workflow), None
        )
        verdicts.append(await check_instance(item, cls, env=env, storage=storage, step_limit=limit))
    return verdicts


def report(verdicts: list[ReplayVerdict], as_json: bool) -> None:
    diverging = sum(1 for v in verdicts if not v.agrees)
    if as_json:
        render.print_json({"instances": [v.as_dict() for v in verdicts], "diverging": diverging})
        return
    if not verdicts:
        render.info("no recorded instance matches")
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("Workflow", "Instance", "Status", "Replay", "Where"):
        table.add_column(column, overflow="fold")
    for v in verdicts:
        table.add_row(v.workflow, v.instance, v.status, _verdict_text(v), _where(v))
    render.console.print(table)
    agreeing = len(verdicts) - diverging
    summary = f"{len(verdicts)} instance(s) replayed: {agreeing} agree, {diverging} diverge"
    if diverging:
        render.error(summary)
    else:
        render.info(summary)


def _verdict_text(v: ReplayVerdict) -> Text:
    if v.agrees:
        return Text("agrees", style="green")
    return Text("DIVERGES" + (" (would fail)" if v.fails_instance else ""), style="bold red")


def _where(v: ReplayVerdict) -> str:
    if v.divergence is not None:
        return v.divergence
    parts: list[Any] = [f"{v.replayed} recorded step(s) replayed"]
    if v.next_steps:
        parts.append("next: " + ", ".join(v.next_steps))
    return "; ".join(parts)
