"""``step.run_workflow``: another registered workflow's instance as one step (an extension).

The step is recorded as a ``step.do`` (Cloudflare's clients see a step with attempts): each
attempt creates one child instance, links it to the parent and parks until the child ends,
holding no memory meanwhile (like a sleep). The transaction that ends the child makes the
parent runnable (the store's link trigger), so any worker takes the parent up, on PostgreSQL
too, without polling. The child's output is the step's output; its error is the step's error,
retried per the step's config by creating a fresh child.

Each attempt's child id is deterministic (the parent, its run and the step; or the ``id``
given), and the child is created and linked before the attempt is recorded: an activation
that dies anywhere in between finds the same child again and never starts two.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from stepstone.authoring.config import resolve_config
from stepstone.authoring.durations import parse_duration
from stepstone.engine.arguments import duration_argument
from stepstone.engine.errors_codec import is_non_retryable, recreate_error
from stepstone.engine.holding import holding
from stepstone.engine.payloads import MAX_JSON_BYTES, encode_json
from stepstone.engine.retry import backoff_delay_ms, should_retry
from stepstone.engine.signals import InstanceFailed
from stepstone.engine.step_host import park
from stepstone.errors import WorkflowFatalError
from stepstone.model import history as h
from stepstone.model.events import EventType
from stepstone.model.statuses import TERMINAL, Status
from stepstone.storage.base import NewInstance, WorkflowRecord
from stepstone.validation import MAX_INSTANCE_ID, instance_id_problem

if TYPE_CHECKING:
    from stepstone.engine.step_host import StepHost

DEFAULT_TIMEOUT = "24 hours"
MIN_TIMEOUT_MS = 1_000
MAX_TIMEOUT_MS = 365 * 86_400_000
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def child_id(base: str, attempt: int) -> str:
    """Attempt 1 uses ``base``; a retry's fresh child adds ``-r<attempt>``."""
    if attempt == 1:
        return base
    suffix = f"-r{attempt}"
    return base[: MAX_INSTANCE_ID - len(suffix)] + suffix


def derived_base_id(act: StepHost, step_key: str) -> str:
    """A readable id unique to the parent's run (a restart gets fresh children) and step."""
    instance = act.claim.instance
    seed = f"{act.workflow_name}\0{instance.id}\0{instance.started_on}\0{step_key}"
    digest = hashlib.sha256(seed.encode()).hexdigest()[:16]
    readable = _UNSAFE.sub("_", instance.id)[:60].lstrip("-") or "child"
    return f"{readable}-{digest}"


@dataclass(frozen=True, slots=True)
class ChildCall:
    """What ``step.run_workflow`` hands to ``run_do`` in place of a function: the step is a
    ``step.do`` to everything that replays or checks it; only its execution differs."""

    workflow: str
    params: bytes
    instance_id: str | None
    timeout: Any
    timeout_ms: int
    detached: bool

    def __call__(self, ctx: dict[str, Any]) -> Any:
        # A step.do's call, so that every step object takes it; never called as one.
        raise AssertionError("a child workflow step is not a function")


def prepare(
    name: str,
    workflow: str,
    params: Any,
    *,
    instance_id: str | None,
    timeout: Any,
    config: Any,
    detached: bool,
) -> ChildCall:
    """Check the call's arguments; a bad one fails the instance as a bad step.do does."""
    where = f"step.run_workflow({name!r})"
    if not isinstance(workflow, str) or not workflow:
        raise WorkflowFatalError(f"{where}: the workflow is the name of a registered workflow")
    if instance_id is not None:
        problem = instance_id_problem(instance_id)
        if problem:
            raise WorkflowFatalError(f"{where}: invalid instance id {instance_id!r}: {problem}")
    timeout_ms = duration_argument(timeout, f"{where} timeout")
    if not MIN_TIMEOUT_MS <= timeout_ms <= MAX_TIMEOUT_MS:
        raise WorkflowFatalError(f"{where}: the timeout is between 1 second and 365 days")
    if callable(resolve_config(config, name).delay):
        raise WorkflowFatalError(f"{where}: the retry delay is a duration, not a function")
    encoded = encode_json(params, f"{where} params")
    if len(encoded) > MAX_JSON_BYTES:
        raise WorkflowFatalError(f"{where}: params are over 1MiB")
    return ChildCall(workflow, encoded, instance_id, timeout, timeout_ms, bool(detached))


async def run_child(
    act: StepHost,
    key: tuple[str, str],
    record: h.StepRecord | None,
    fresh_config: dict[str, Any],
    call: ChildCall,
) -> Any:
    """Execute (or resume) the step: ``run_do`` has answered recorded ends already."""
    child = _Child(
        act,
        key,
        record,
        {**fresh_config, "timeout": call.timeout},
        call.workflow,
        call.params,
        call.detached,
    )
    child.base = call.instance_id if call.instance_id is not None else derived_base_id(act, key[1])
    child.timeout_ms = call.timeout_ms
    return await child.run()


class _Child:
    def __init__(
        self,
        act: StepHost,
        key: tuple[str, str],
        record: h.StepRecord | None,
        fresh_config: dict[str, Any],
        workflow: str,
        params: bytes,
        detached: bool,
    ) -> None:
        self.act = act
        self.key = key
        if record is None:
            record = h.StepRecord(h.DO, key[1], 0, self.act.now())
            self.act.history.steps[key] = record
        self.record = record
        self.started = bool(record.attempts) or record.config is not None
        self.config = record.config or fresh_config
        self.workflow = workflow
        self.params = params
        self.detached = detached
        self.base = ""
        self.timeout_ms = 0
        self._target: WorkflowRecord | None = None

    async def run(self) -> Any:
        act, record = self.act, self.record
        retries = self.config["retries"]
        while True:
            last = record.attempts[-1] if record.attempts else None
            if last is None or last.end is not None:
                if last is not None and last.retry_at is not None and act.now() < last.retry_at:
                    await park(act, last.retry_at)
                await act.settle()
                if act.holds_new_steps:
                    await park(act, None)
                last = await self._start(1 if last is None else last.attempt + 1)
            attempt = last.attempt
            target = await self._workflow()
            with holding():
                instance = await act.storage.get_instance(target.pk, child_id(self.base, attempt))
            if instance is None:
                error = _error("ChildInstanceGone", "the child instance was deleted")
            elif instance.status == Status.COMPLETE:
                output = instance.output or b"null"
                await act.write(
                    [
                        act.event(EventType.ATTEMPT_COMPLETED, {"attempt": attempt}, self.key),
                        act.event(
                            EventType.STEP_COMPLETED, {"output": orjson.Fragment(output)}, self.key
                        ),
                    ]
                )
                record.done, record.success, record.output = True, True, output
                return orjson.loads(output)
            elif instance.status in TERMINAL:
                error = _child_error(instance.status, instance.error, instance.id)
            elif act.now() >= last.start + self.timeout_ms:
                error = _error(
                    "WorkflowTimeoutError",
                    f"The child instance {instance.id} did not end within {self.timeout_ms}ms",
                )
            else:
                await park(act, last.start + self.timeout_ms)
            exc = recreate_error(error)
            now = act.now()
            data: dict[str, Any] = {"attempt": attempt, "error": error}
            final = is_non_retryable(exc) or error["name"] == "WorkflowTerminated"
            if final or not should_retry(attempt, retries["limit"]):
                await act.write(
                    [
                        act.event(EventType.ATTEMPT_ERRORED, data, self.key, ts=now),
                        act.event(EventType.STEP_ERRORED, {"error": error}, self.key, ts=now),
                    ]
                )
                record.done, record.success, record.error = True, False, error
                raise exc
            delay = backoff_delay_ms(parse_duration(retries["delay"]), attempt, retries["backoff"])
            data.update(retryDelayMs=delay, retryAt=now + delay)
            await act.write([act.event(EventType.ATTEMPT_ERRORED, data, self.key, ts=now)])
            last.end, last.success, last.error, last.retry_at = now, False, error, now + delay

    async def _start(self, attempt: int) -> h.AttemptRecord:
        """Create and link the attempt's child, then record the attempt (in that order)."""
        act = self.act
        target = await self._workflow()
        instance_id = child_id(self.base, attempt)
        now = act.now()
        with holding():
            await act.storage.create_instances(
                target.pk,
                target.version.id,
                [NewInstance(instance_id, self.params, trigger_source="binding")],
                now,
                skip_existing=True,
            )
            created = await act.storage.get_instance(target.pk, instance_id)
        if created is None:  # deleted at once: the next attempt's check reports it
            raise InstanceFailed("WorkflowFatalError", f"child {instance_id} vanished")
        with holding():
            await act.storage.link_child(act.claim, created.pk, detached=self.detached)
        events = []
        if not self.started:
            events.append(
                act.event(
                    EventType.STEP_STARTED, {"config": self.config, "hasRollback": False}, self.key
                )
            )
            self.started = True
            self.record.config = self.config
        child = {"workflow": self.workflow, "id": instance_id}
        events.append(
            act.event(EventType.ATTEMPT_STARTED, {"attempt": attempt, "child": child}, self.key)
        )
        await act.write(events)
        started = h.AttemptRecord(attempt, now)
        self.record.attempts.append(started)
        return started

    async def _workflow(self) -> WorkflowRecord:
        if self._target is not None:
            return self._target
        act = self.act
        with holding():
            account = await _account_of(act)
            found = await act.storage.get_workflow(account, self.workflow)
        if found is None:
            error = _error(
                "WorkflowNotFound", f"step.run_workflow: no workflow named {self.workflow!r}"
            )
            await act.write([act.event(EventType.STEP_ERRORED, {"error": error}, self.key)])
            self.record.done, self.record.success, self.record.error = True, False, error
            raise recreate_error(error)
        self._target = found
        return found


async def _account_of(act: StepHost) -> str:
    """The parent's account: children are created beside it."""
    pk = act.claim.instance.workflow_pk
    offset = 0
    while True:
        page, total = await act.storage.list_workflows(None, act.workflow_name, offset, 100)
        for workflow in page:
            if workflow.pk == pk:
                return workflow.account_id
        offset += len(page)
        if not page or offset >= total:
            raise InstanceFailed("WorkflowFatalError", "the parent's workflow is gone")


def _error(name: str, message: str) -> dict[str, Any]:
    return {"name": name, "message": message}


def _child_error(status: str, raw: bytes | None, instance_id: str) -> dict[str, Any]:
    if status == Status.TERMINATED:
        return _error("WorkflowTerminated", f"The child instance {instance_id} was terminated")
    if raw:
        error = orjson.loads(raw)
        if isinstance(error, dict) and "name" in error:
            return {"name": str(error["name"]), "message": str(error.get("message") or "")}
    return _error("Error", f"The child instance {instance_id} failed")
