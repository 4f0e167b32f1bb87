"""The embedding API: run Stepstone inside your own asyncio program.

```python
engine = await Engine.open("sqlite:///stepstone.db")
await engine.register("orders", OrderWorkflow)
instance = await engine.workflow("orders").create(id="order-1", params={"sku": "A1"})
print(await instance.wait())
await engine.close()
```

Bindings mirror Cloudflare's Workflow binding: ``create``, ``create_batch``, ``get``; an
instance handle has ``status``, ``pause``, ``resume``, ``terminate``, ``restart``,
``send_event`` and ``delete``. The same objects are what ``self.env`` gives a workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from stepstone import audit, bulk
from stepstone.cron import TICK_SECONDS, CronScheduler
from stepstone.engine.clock import Clock
from stepstone.engine.worker import Worker, WorkerSettings
from stepstone.errors import InvalidRequest, StepstoneError
from stepstone.loader import (
    WorkflowLoadError,
    load_class,
    load_version,
    set_implicit_dependencies,
)
from stepstone.model.statuses import TERMINAL
from stepstone.ops import CreateRequest, Operations, RestartFrom, encode_payload, retention_ms
from stepstone.project import ProjectConfig, WorkflowConfig, load_project
from stepstone.retention import SWEEP_SECONDS, RetentionSweeper
from stepstone.storage import open_storage
from stepstone.storage.base import Storage, WorkflowRecord
from stepstone.webhooks import delivery as hooks
from stepstone.webhooks.config import sync_config_hooks

log = logging.getLogger("stepstone.project")


class InstanceHandle:
    """One instance, as the binding's ``get``/``create`` return it."""

    def __init__(self, binding: WorkflowBinding, instance_id: str) -> None:
        self._binding = binding
        self.id = instance_id

    def __repr__(self) -> str:
        return f"InstanceHandle({self._binding.name!r}, {self.id!r})"

    @property
    def _ops(self) -> Operations:
        return self._binding.ops

    @property
    def _where(self) -> tuple[str, str, str]:
        return self._binding.account_id, self._binding.name, self.id

    async def status(self) -> dict[str, Any]:
        """``{status, error, output, rollback}``; a rollback in progress reports ``running``."""
        _, record = await self._ops.instance(*self._where)
        status = "running" if record.status == "rollingBack" else record.status
        result: dict[str, Any] = {
            "status": status,
            "error": None if record.error is None else orjson.loads(record.error),
            "output": None if record.output is None else orjson.loads(record.output),
            "rollback": None if record.rollback is None else orjson.loads(record.rollback),
        }
        return result

    async def pause(self) -> None:
        await self._ops.pause(*self._where)

    async def resume(self) -> None:
        await self._ops.resume(*self._where)

    async def terminate(
        self, options: Mapping[str, Any] | None = None, *, rollback: bool = False
    ) -> None:
        rollback = bool((options or {}).get("rollback", rollback))
        await self._ops.terminate(*self._where, rollback=rollback)

    async def restart(
        self, options: Mapping[str, Any] | None = None, *, from_: Mapping[str, Any] | None = None
    ) -> None:
        target = (options or {}).get("from", from_)
        restart_from = None
        if target is not None:
            restart_from = RestartFrom(
                name=str(target["name"]),
                count=int(target.get("count", 1)),
                type=str(target.get("type", "do")),
            )
        await self._ops.restart(*self._where, from_=restart_from)

    async def send_event(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        type: str | None = None,
        payload: Any = None,
    ) -> None:
        if options is not None:
            type, payload = options.get("type"), options.get("payload", payload)
        if type is None:
            raise InvalidRequest("send_event needs a type")
        await self._ops.send_event(*self._where, type, encode_payload(payload))

    async def delete(self) -> None:
        await self._ops.delete_instances(self._binding.account_id, self._binding.name, [self.id])

    async def wait(self, timeout: float = 60.0, poll: float = 0.1) -> dict[str, Any]:
        """Wait until the instance is complete, errored or terminated; return ``status()``.

        In the engine's own process a status change wakes this at once; ``poll`` bounds the
        wait for changes made by other processes.
        """
        changes = self._binding.changes
        async with asyncio.timeout(timeout):
            while True:
                pulse = changes.next_pulse() if changes is not None else None
                status = await self.status()
                if status["status"] in TERMINAL:
                    return status
                if pulse is None:
                    await asyncio.sleep(poll)
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(poll):
                            await pulse.wait()


class ChangeSignal:
    """Pulses after every commit that may change an instance's status; fired from any thread."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def next_pulse(self) -> asyncio.Event:
        """The event the next pulse sets: take it before reading, then wait on it."""
        return self._event

    def fire(self) -> None:
        if self._loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._pulse()
        else:
            self._loop.call_soon_threadsafe(self._pulse)

    def _pulse(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()


class WorkflowBinding:
    """``create``, ``create_batch`` and ``get`` for one workflow."""

    def __init__(
        self,
        ops: Operations,
        account_id: str,
        name: str,
        source: str = "binding",
        changes: ChangeSignal | None = None,
    ):
        self.ops = ops
        self.account_id = account_id
        self.name = name
        self._source = source
        self.changes = changes

    async def create(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        params: Any = None,
        retention: Mapping[str, Any] | None = None,
    ) -> InstanceHandle:
        request = _create_request(
            {**(options or {}), **_given(id=id, params=params, retention=retention)}
        )
        _, records = await self.ops.create_instances(
            self.account_id,
            self.name,
            [request],
            skip_existing=False,
            trigger_source=self._source,
        )
        return InstanceHandle(self, records[0].id)

    async def create_batch(
        self,
        items: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Cloudflare's ``createBatch``.

        A list (deprecated, as in Cloudflare) creates what it can, skips ids that exist and
        returns the handles. An object, ``{"count": N, "params": ..., "retention": ...}`` or
        ``{"instances": [...]}`` (also as keywords), returns ``{"created": [handles],
        "errors": [{index, id, code, message}]}``: an id repeated in the batch (10415), one
        that exists (10405), a reserved or invalid id (10401) is reported, never skipped.
        """
        if items is None or isinstance(items, Mapping):
            return await self._create_batch_object({**(items or {}), **options})
        if options:
            raise InvalidRequest("create_batch takes a list or an options object, not both")
        if not 1 <= len(items) <= 100:
            raise InvalidRequest("create_batch takes 1 to 100 items")
        requests = [_create_request(item) for item in items]
        _, records = await self.ops.create_instances(
            self.account_id,
            self.name,
            requests,
            skip_existing=True,
            trigger_source=self._source,
        )
        return [InstanceHandle(self, r.id) for r in records]

    async def _create_batch_object(self, options: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(options) - {"count", "instances", *_CREATE_OPTIONS} - {"id"}
        if unknown:
            raise InvalidRequest(f"unknown create_batch options {sorted(unknown)}")
        count, instances = options.get("count"), options.get("instances")
        if (count is None) == (instances is None):
            raise InvalidRequest("create_batch takes either count or instances")
        entries: list[CreateRequest | tuple[str | None, StepstoneError]] = []
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
                raise InvalidRequest("count must be an integer from 1 to 100")
            shared = {k: v for k, v in options.items() if k != "count"}
            entries = [_create_request(shared)] * count
        else:
            if set(options) != {"instances"}:
                raise InvalidRequest("with instances, params and retention go in each entry")
            if isinstance(instances, str | bytes) or not isinstance(instances, Sequence):
                raise InvalidRequest("instances must be a list of create options")
            for item in instances:
                try:
                    if not isinstance(item, Mapping):
                        raise InvalidRequest("each of instances is an options object")
                    entries.append(_create_request(item))
                except StepstoneError as exc:
                    given = item.get("id") if isinstance(item, Mapping) else None
                    entries.append((given if isinstance(given, str) else None, exc))
        _, records, errors = await self.ops.create_batch(
            self.account_id, self.name, entries, trigger_source=self._source
        )
        return {
            "created": [InstanceHandle(self, r.id) for r in records],
            "errors": [e.as_dict() for e in errors],
        }

    async def get(self, id: str) -> InstanceHandle:
        await self.ops.instance(self.account_id, self.name, id)
        return InstanceHandle(self, id)


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


_CREATE_OPTIONS = frozenset({"id", "params", "retention", "locationHint", "location_hint"})


def _create_request(options: Mapping[str, Any]) -> CreateRequest:
    unknown = set(options) - _CREATE_OPTIONS
    if unknown:
        raise InvalidRequest(f"unknown create options {sorted(unknown)}")
    retention = options.get("retention") or {}
    return CreateRequest(
        id=options.get("id"),
        params=encode_payload(options.get("params")),
        success_retention_ms=retention_ms(
            retention.get("successRetention", retention.get("success_retention")),
            "successRetention",
        ),
        error_retention_ms=retention_ms(
            retention.get("errorRetention", retention.get("error_retention")), "errorRetention"
        ),
    )


def binding_attribute(workflow_name: str) -> str:
    """``order-workflow`` is reachable as ``env.ORDER_WORKFLOW``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", workflow_name).upper()


class Env:
    """``self.env`` of a workflow or a Worker: bindings to the account's workflows, and values.

    ``env.ORDERS`` and ``env["orders"]`` are the binding of workflow ``orders``; configured
    values (``[env]`` in stepstone.toml, ``[vars]`` and ``.dev.vars`` secrets of a wrangler
    project) are reachable the same two ways. A wrangler ``binding`` name (``env.MY_WORKFLOW``)
    is the binding of the workflow it names.
    """

    def __init__(
        self,
        ops: Operations,
        account_id: str,
        values: Mapping[str, Any],
        bindings: Mapping[str, str] | None = None,
    ) -> None:
        self._ops = ops
        self._account_id = account_id
        self._values = dict(values)
        self._bindings = dict(bindings or {})

    def _binding(self, workflow_name: str) -> WorkflowBinding:
        return WorkflowBinding(self._ops, self._account_id, workflow_name)

    def __getitem__(self, key: str) -> Any:
        if key in self._values:
            return self._values[key]
        if key in self._bindings:
            return self._binding(self._bindings[key])
        return self._binding(key)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._values:
            return self._values[name]
        if name in self._bindings:
            return self._binding(self._bindings[name])
        return _LazyBinding(self._ops, self._account_id, name)

    def __contains__(self, key: object) -> bool:
        return key in self._values or key in self._bindings


class _LazyBinding(WorkflowBinding):
    """A binding named by attribute: resolves ``ORDER_WORKFLOW`` to ``order-workflow``."""

    def __init__(self, ops: Operations, account_id: str, attribute: str) -> None:
        super().__init__(ops, account_id, attribute)
        self._attribute = attribute
        self._resolved = False

    async def _resolve(self) -> None:
        if self._resolved:
            return
        records, _ = await self.ops.storage.list_workflows(self.account_id, None, 0, 1_000_000)
        for record in records:
            if binding_attribute(record.name) == self._attribute or record.name == self._attribute:
                self.name = record.name
                break
        self._resolved = True

    async def create(
        self, options: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> InstanceHandle:
        await self._resolve()
        return await super().create(options, **kwargs)

    async def create_batch(
        self,
        items: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        await self._resolve()
        return await super().create_batch(items, **options)

    async def get(self, id: str) -> InstanceHandle:
        await self._resolve()
        return await super().get(id)


async def sync_project(ops: Operations, project: ProjectConfig) -> list[WorkflowRecord]:
    """Register the project's workflows, adding a version only where the definition changed.

    A workflow whose module this process cannot import does not stop the others: it is
    registered anyway (a fixed module runs its queued instances), the reason is logged and
    put in ``ops.unloadable``, and creating its instances answers 10202 with it.
    """
    project.activate()
    records = []
    for wf in project.workflows:
        set_implicit_dependencies(wf.script_name, project.implicit_dependencies)
        if ops.check_importable:
            try:
                load_class(wf.script_name, wf.class_name)
            except WorkflowLoadError as exc:
                log.error("workflow %r cannot run in this process: %s", wf.name, exc)
                ops.unloadable[wf.name] = str(exc)
        current = await ops.storage.get_workflow(project.account_id, wf.name)
        version = current.version if current is not None else None
        unchanged = (
            version is not None
            and version.class_name == wf.class_name
            and version.script_name == wf.script_name
            and version.schedules == wf.schedules
            and version.limits_steps == wf.limits_steps
            and version.concurrency_limit == wf.concurrency_limit
        )
        if unchanged and current is not None:
            records.append(current)
            continue
        checked = ops.check_importable
        ops.check_importable = checked and wf.name not in ops.unloadable
        try:
            records.append(await _put(ops, project, wf))
        finally:
            ops.check_importable = checked
    await sync_config_hooks(ops.storage, project.account_id, project.workflows, records, ops.now())
    return records


async def _put(ops: Operations, project: ProjectConfig, wf: WorkflowConfig) -> WorkflowRecord:
    return await ops.put_workflow(
        project.account_id,
        wf.name,
        class_name=wf.class_name,
        script_name=wf.script_name,
        limits_steps=wf.limits_steps,
        schedules=wf.schedules,
        concurrency_limit=wf.concurrency_limit,
    )


class Engine:
    """Storage, operations and (optionally) a worker in this process."""

    def __init__(
        self,
        storage: Storage,
        ops: Operations,
        project: ProjectConfig,
        worker: Worker | None,
    ) -> None:
        self.storage = storage
        self.ops = ops
        self.project = project
        self.worker = worker
        self.changes = ChangeSignal()
        storage.add_change_listener(self.changes.fire)

    def env(self) -> Env:
        """``env`` as the project's Worker and workflows see it: values and bindings."""
        return Env(
            self.ops,
            self.project.account_id,
            self.project.env,
            self.project.bindings,
        )

    @classmethod
    async def open(
        cls,
        url: str = "sqlite:///stepstone.db",
        *,
        config: str | Path | ProjectConfig | None = None,
        run_worker: bool = True,
        worker_settings: WorkerSettings | None = None,
        clock: Clock | None = None,
        env: Mapping[str, Any] | None = None,
        check_importable: bool | None = None,
    ) -> Engine:
        """Open the store at ``url``, register ``config``'s workflows, start a worker.

        ``check_importable`` (default: whether this process runs a worker) refuses to
        register a workflow whose module this process cannot import.
        """
        if isinstance(config, str | Path):
            project = load_project(config)
        else:
            project = config or ProjectConfig()
        if env:
            project = dataclasses.replace(project, env={**project.env, **env})
        storage = open_storage(url)
        await storage.open()
        if check_importable is None:
            # An API-only process registers workflows that other workers run; they may import
            # modules this process cannot.
            check_importable = run_worker
        ops = Operations(storage, clock=clock, check_importable=check_importable)
        engine = cls(storage, ops, project, None)
        if run_worker:
            worker = Worker(
                storage,
                load_version,
                lambda workflow: Env(ops, workflow.account_id, project.env, project.bindings),
                settings=worker_settings,
                clock=clock,
                periodic=[
                    (TICK_SECONDS, CronScheduler(storage, clock=clock).tick),
                    (SWEEP_SECONDS, RetentionSweeper(storage, clock=clock).sweep),
                    # Operator extensions: bulk jobs (leased, so one server runs each) and the
                    # audit log's own retention.
                    (bulk.TICK_SECONDS, bulk.BulkRunner(ops, clock=clock).tick),
                    (audit.SWEEP_SECONDS, audit.AuditSweeper(storage, clock=clock).sweep),
                    (hooks.TICK_SECONDS, hooks.WebhookDispatcher(storage, clock=clock).tick),
                ],
            )
            ops.on_workflows_changed = worker.invalidate_workflows
            ops.runner = worker
            engine.worker = worker
        await sync_project(engine.ops, project)
        if engine.worker is not None:
            if storage.sole_worker_lock():
                # No other worker can be using this database: leases left by a crashed
                # process are stale, and their instances can resume at once.
                await storage.expire_leases(None, engine.ops.now())
            await engine.worker.start()
        return engine

    async def register(
        self,
        name: str,
        workflow_class: type | None = None,
        *,
        class_name: str | None = None,
        script_name: str | None = None,
        limits_steps: int | None = None,
        schedules: Sequence[str] = (),
    ) -> WorkflowRecord:
        """Register (or update, adding a version) a workflow from a class or module path."""
        if workflow_class is not None:
            class_name = workflow_class.__qualname__
            script_name = workflow_class.__module__
        if not class_name or not script_name:
            raise InvalidRequest("register needs a class, or class_name and script_name")
        return await self.ops.put_workflow(
            self.project.account_id,
            name,
            class_name=class_name,
            script_name=script_name,
            limits_steps=limits_steps,
            schedules=schedules,
        )

    def workflow(self, name: str) -> WorkflowBinding:
        return WorkflowBinding(
            self.ops,
            self.project.account_id,
            name,
            changes=self.changes,
        )

    async def close(self, drain_seconds: float = 0.0) -> None:
        """Stop the worker (letting running steps finish for up to ``drain_seconds``) and
        close the store."""
        if self.worker is not None:
            await self.worker.stop(drain_seconds)
        await self.storage.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
