"""The worker: claim runnable instances with a lease, run activations, keep leases alive."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stepstone.authoring.entrypoint import WorkflowEntrypoint
from stepstone.engine.activation import Activation
from stepstone.engine.clock import Clock, SystemClock
from stepstone.engine.signals import LeaseLost, StoreLost
from stepstone.model.outage import StoreOutage
from stepstone.model.statuses import Status
from stepstone.observability import metrics
from stepstone.storage.base import (
    Claim,
    Fenced,
    InstanceRecord,
    Release,
    Storage,
    VersionRecord,
    WorkflowRecord,
)

log = logging.getLogger("stepstone.worker")

Loader = Callable[[VersionRecord], type[WorkflowEntrypoint]]
EnvFactory = Callable[[WorkflowRecord], Any]
INTERNAL_ERROR = {"name": "WorkflowInternalError", "message": "the engine failed: {}"}
UNLOADABLE_RETRY_MS = 5_000
# A store without push wake-ups (Storage.push_wakes) is polled this soon after work was found,
# then twice as long after each look that found none, up to poll_ms.
FIRST_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Knobs of a worker.

    Attributes:
        concurrency: instances running at once in this worker (waiting ones do not count).
        max_running: instances running at once across every worker sharing the database;
            give every worker the same value. None means no limit beyond ``concurrency``.
        lease_ms: how long a claim lives without a heartbeat; another worker takes over after.
        poll_ms: the longest sleep between looks for due work when no wake-up arrives. On a
            store without push wake-ups (``postgresql+portable://``) the sleeps start at
            50 ms whenever work was found and double up to this.
        claim_batch: the most instances claimed in one transaction.
    """

    concurrency: int = 100
    max_running: int | None = None
    lease_ms: int = 30_000
    poll_ms: int = 1_000
    claim_batch: int = 100


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        storage: Storage,
        loader: Loader,
        env_factory: EnvFactory,
        *,
        settings: WorkerSettings | None = None,
        clock: Clock | None = None,
        owner: str | None = None,
        periodic: Sequence[tuple[float, Callable[[], Awaitable[object]]]] = (),
    ) -> None:
        """``periodic``: ``(every_seconds, job)`` pairs run in their own tasks while the
        worker runs (cron firing, the retention sweeper); a failing job is logged and retried
        at its next turn."""
        self.storage = storage
        self.loader = loader
        self.env_factory = env_factory
        self.settings = settings or WorkerSettings()
        self.clock = clock or SystemClock()
        self.owner = owner or new_owner_id()
        self._active: dict[int, tuple[Claim, asyncio.Task[None], Activation | None]] = {}
        self._wake = asyncio.Event()
        self._saturated = False
        # Slots promised to instances this process is creating claimed (``reserve_slot``).
        self._reserved = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._workflows: dict[int, WorkflowRecord] = {}
        self._versions: dict[str, VersionRecord] = {}
        self._runnable_pks: list[int] = []
        self._refresh_due = 0
        self._stopping = False
        self._idle = asyncio.Event()
        self._periodic = list(periodic)
        self._periodic_tasks: list[asyncio.Task[None]] = []
        # Operator stops (terminate, restart, delete): the newest epoch each running instance
        # was stopped at, while its activation unwinds.
        self._stop_epochs: dict[int, int | None] = {}
        # Claims taken away whose activation has ended, and when: a stop signal that arrives
        # late still hands their lease back (see release_stopped).
        self._stopped: dict[int, tuple[Claim, float]] = {}
        self._releasing: set[asyncio.Task[None]] = set()

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        metrics.track_worker(self)
        self.storage.add_wake_listener(self.wake)
        self.storage.add_control_listener(self.control)
        self._main = asyncio.create_task(self._run(), name="stepstone-worker")
        self._heartbeat = asyncio.create_task(self._beat(), name="stepstone-heartbeat")
        self._periodic_tasks = [
            asyncio.create_task(self._every(seconds, job), name=f"stepstone-periodic-{i}")
            for i, (seconds, job) in enumerate(self._periodic)
        ]

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Stop claiming and hand running instances back.

        With ``drain_seconds`` the steps already executing may finish (and be recorded) first:
        no new step starts, as under a pause, and each activation releases its instance as
        runnable at once. What is still running after that is abandoned; its attempt is
        recorded as failed and retried by whichever worker takes the instance next.
        """
        self._stopping = True
        metrics.untrack_worker(self)
        for task in (self._main, self._heartbeat, *self._periodic_tasks):
            if task is not None:
                task.cancel()
        if drain_seconds > 0 and self._active:
            for _, _, activation in self._active.values():
                if activation is not None:
                    activation.draining = True
            running = [task for _, task, _ in self._active.values()]
            await asyncio.wait(running, timeout=drain_seconds)
        for _, task, _ in list(self._active.values()):
            task.cancel()
        pending = [t for t in (self._main, self._heartbeat, *self._periodic_tasks) if t]
        pending += [task for _, task, _ in self._active.values()]
        await asyncio.gather(*pending, return_exceptions=True)
        await self.storage.expire_leases(self.owner, self.clock.now_ms())

    def wake(self) -> None:
        """Look for work now; callable from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def control(self, instance_pk: int, epoch: int | None) -> None:
        """An operator took the instance away at ``epoch`` (None: deleted); callable from any
        thread. The activation of an older claim is cancelled now, not at its next write."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._stop(instance_pk, epoch)
        else:
            loop.call_soon_threadsafe(self._stop, instance_pk, epoch)

    def _stop(self, instance_pk: int, epoch: int | None) -> None:
        entry = self._active.get(instance_pk)
        if entry is not None:
            claim, task, _ = entry
            if epoch is not None and claim.epoch >= epoch:
                return  # a claim made after the stop
            if instance_pk in self._stop_epochs:
                # Already unwinding (signals may repeat): a second cancel would cut short its
                # wait for the user's code. Only the newest epoch matters for the hand-back.
                known = self._stop_epochs[instance_pk]
                if epoch is not None:
                    self._stop_epochs[instance_pk] = epoch if known is None else max(known, epoch)
                return
            self._stop_epochs[instance_pk] = epoch
            task.cancel()
            return
        stopped = self._stopped.get(instance_pk)
        if stopped is not None and epoch is not None and stopped[0].epoch < epoch:
            release = asyncio.create_task(self._release_stopped(stopped[0], epoch))
            self._releasing.add(release)
            release.add_done_callback(self._releasing.discard)

    async def _release_stopped(self, claim: Claim, epoch: int) -> None:
        try:
            await self.storage.release_stopped(self.owner, claim.instance.pk, epoch)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease then simply expires: the instance is claimable after lease_ms.
            log.exception("could not hand back the lease of %s", claim.instance.id)

    def _remember_stopped(self, claim: Claim) -> None:
        now = time.monotonic()
        horizon = now - self.settings.lease_ms / 1000
        for pk in [pk for pk, (_, at) in self._stopped.items() if at < horizon]:
            del self._stopped[pk]
        self._stopped[claim.instance.pk] = (claim, now)

    def reserve_slot(self, workflow_pk: int) -> tuple[str, int] | None:
        """A slot for an instance this process is about to create, to run here at once: the
        create then commits it claimed by this worker (owner, lease expiry returned), one claim
        statement and one durable commit fewer than a claim would take.

        Only while nothing else waits for the slot, so that a new instance never overtakes a
        queued one or a woken sleeper: a free slot, no look for work due or under way, no
        runnable work left behind by the last claim, and no limit on the workflow (a
        ``concurrency`` cap or ``max_running`` counts the leases in one statement).
        """
        settings = self.settings
        if (
            self._main is None
            or self._stopping
            or self._saturated
            or self._wake.is_set()
            or settings.max_running is not None
            or workflow_pk not in self._workflows
            or self._capped(workflow_pk)
            or len(self._active) + self._reserved >= settings.concurrency
        ):
            return None
        self._reserved += 1
        return self.owner, self.clock.now_ms() + settings.lease_ms

    def run_created(self, claim: Claim | None) -> None:
        """Run the instance ``reserve_slot`` was for, now created claimed; None frees the slot
        (the create failed). A worker stopping leaves it to its lease's expiry."""
        self._reserved -= 1
        if claim is not None and not self._stopping:
            self._launch(claim)

    def invalidate_workflows(self) -> None:
        """Re-read the registered workflows at the next look (after a PUT or DELETE)."""
        self._refresh_due = 0
        self.wake()

    @property
    def active_count(self) -> int:
        return len(self._active)

    @property
    def slot_limit(self) -> int:
        return self.settings.concurrency

    # --- main loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        settings = self.settings
        # Other processes' work is only found by looking: soon while work keeps coming, at
        # poll_ms when idle (one claim statement per worker per poll_ms, as with wake-ups).
        polled = not self.storage.push_wakes
        first_poll = min(FIRST_POLL_S, settings.poll_ms / 1000)
        backoff = first_poll
        while not self._stopping:
            self._wake.clear()
            try:
                await self._refresh_workflows()
                free = settings.concurrency - len(self._active) - self._reserved
                timeout = settings.poll_ms / 1000
                if free > 0 and self._runnable_pks:
                    want = min(free, settings.claim_batch)
                    # With the claim, the next wake-up among what it left (one round trip on
                    # PostgreSQL): a wake-up before the poll shortens this wait.
                    claims, next_wake = await self.storage.claim_and_next_wake(
                        self.owner,
                        want,
                        self.clock.now_ms(),
                        settings.lease_ms,
                        self._runnable_pks,
                        max_running=settings.max_running,
                    )
                    for claim in claims:
                        self._launch(claim)
                    if claims:
                        backoff = first_poll
                    # Whether runnable work may be left behind for want of a free slot.
                    self._saturated = len(claims) == want or settings.max_running is not None
                    if len(claims) == want:
                        continue
                    if next_wake is not None:
                        timeout = min(timeout, max(0, next_wake - self.clock.now_ms()) / 1000)
                else:
                    self._saturated = free <= 0
            except asyncio.CancelledError:
                raise
            except StoreOutage as exc:  # the store's health logs an outage once
                log.debug("worker loop: %s", exc)
                timeout = settings.poll_ms / 1000
            except Exception:
                log.exception("worker loop failed; retrying")
                timeout = settings.poll_ms / 1000
            if polled:
                timeout = min(timeout, backoff)
                backoff = min(backoff * 2, settings.poll_ms / 1000)
            if timeout > 0:
                try:
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)

    async def _refresh_workflows(self) -> None:
        now = self.clock.now_ms()
        if now < self._refresh_due:
            return
        self._refresh_due = now + 5_000
        records, _ = await self.storage.list_workflows(None, None, 0, 1_000_000)
        workflows: dict[int, WorkflowRecord] = {}
        for record in records:
            try:
                self.loader(record.version)
            except Exception as exc:
                log.debug("workflow %s is not importable here: %s", record.name, exc)
                continue
            workflows[record.pk] = record
        self._workflows = workflows
        self._runnable_pks = sorted(workflows)

    def _launch(self, claim: Claim) -> None:
        task = asyncio.create_task(self._activate(claim), name=f"instance-{claim.instance.id}")
        self._active[claim.instance.pk] = (claim, task, None)

    async def _version(self, instance: InstanceRecord) -> VersionRecord | None:
        # Versions never change once written: one read per version, not per activation.
        version = self._versions.get(instance.version_id)
        if version is None:
            version = await self.storage.get_version(instance.workflow_pk, instance.version_id)
            if version is not None:
                self._versions[version.id] = version
        return version

    async def _activate(self, claim: Claim) -> None:
        instance = claim.instance
        activation: Activation | None = None
        taken_away = False
        try:
            workflow = self._workflows.get(instance.workflow_pk)
            version = await self._version(instance) if workflow is not None else None
            if workflow is None or version is None:
                raise LookupError("workflow or version missing")
            try:
                cls = self.loader(version)
            except Exception:
                log.warning("cannot load %s.%s", version.script_name, version.class_name)
                retry_at = self.clock.now_ms() + UNLOADABLE_RETRY_MS
                status = Status.QUEUED if instance.started_on is None else Status.WAITING
                await self.storage.release_instance(
                    claim, Release(status, runnable_at=retry_at), self.clock.now_ms()
                )
                return
            entry = cls(None, self.env_factory(workflow))
            activation = Activation(
                self.storage,
                claim,
                self.clock,
                entry,
                workflow.name,
                step_limit=version.limits_steps,
                # Set by stepstone.loader from the project's compatibility flags.
                implicit_dependencies=getattr(cls, "__stepstone_implicit_dependencies__", True),
            )
            current = self._active.get(instance.pk)
            if current is not None and current[0] is claim:
                self._active[instance.pk] = (claim, current[1], activation)
            metrics.ACTIVATIONS.labels(workflow.name).inc()
            release = await activation.run()
            await self.storage.release_instance(claim, release, self.clock.now_ms())
            metrics.instance_ended(workflow.name, release.status)
        except (LeaseLost, Fenced):
            metrics.LEASE_TAKEOVERS.inc()
            taken_away = True
            log.debug("instance %s was taken away from this worker", instance.id)
        except asyncio.CancelledError:
            if self._stopping:
                raise
            # Cancelled by an operator's stop or a lost lease: this task ends here.
            taken_away = True
            current_task = asyncio.current_task()
            if current_task is not None:
                current_task.uncancel()
            log.debug("activation of %s cancelled: taken away", instance.id)
        except (StoreOutage, StoreLost) as exc:
            # Logged once by the store's health; nothing can be recorded now. The lease runs
            # out and the instance is taken up again, as after a crash.
            log.debug("activation of %s dropped: %s", instance.id, exc)
        except Exception as exc:
            log.exception("activation of %s failed inside the engine", instance.id)
            error = dict(INTERNAL_ERROR, message=INTERNAL_ERROR["message"].format(exc))
            try:
                await self.storage.release_instance(
                    claim, Release(Status.ERRORED, error=orjson.dumps(error)), self.clock.now_ms()
                )
            except Exception:
                log.exception("could not record the failure of %s", instance.id)
        finally:
            # On a shared database the release can commit, and the main loop claim the
            # instance again, before this task resumes: leave a newer claim's entry alone.
            held = self._active.get(instance.pk)
            stop_epoch: int | None = None
            if held is not None and held[0] is claim:
                del self._active[instance.pk]
                stop_epoch = self._stop_epochs.pop(instance.pk, None)
            if taken_away:
                self._remember_stopped(claim)
            # An end frees a slot the stores do not announce (an ended instance leaves nothing
            # to claim): of the whole worker when it was full, or of its capped workflow.
            if self._saturated or self._capped(instance.workflow_pk):
                self._wake.set()
            # Hand the lease back only once nothing of this activation runs any more: until
            # then the instance cannot be claimed again (a restart never overlaps the old run).
            lingering = activation is not None and activation.lingering
            if stop_epoch is not None and not lingering and not self._stopping:
                await self._release_stopped(claim, stop_epoch)

    def _capped(self, workflow_pk: int) -> bool:
        workflow = self._workflows.get(workflow_pk)
        return workflow is not None and workflow.version.concurrency_limit is not None

    async def _beat(self) -> None:
        interval = max(self.settings.lease_ms / 3, 50) / 1000
        while True:
            await asyncio.sleep(interval)
            if not self._active:
                continue
            renewing = {pk: claim for pk, (claim, _, _) in self._active.items()}
            try:
                held = await self.storage.renew_leases(
                    self.owner, list(renewing.values()), self.clock.now_ms(), self.settings.lease_ms
                )
            except asyncio.CancelledError:
                raise
            except StoreOutage as exc:
                log.debug("lease renewal: %s", exc)
                continue
            except Exception:
                log.exception("lease renewal failed")
                continue
            for pk, status in held.items():
                entry = self._active.get(pk)
                # The instance may have ended and been claimed again while the renewal was on
                # its way: the answer is about the claim renewed, not the one held now.
                if entry is None or entry[0] is not renewing.get(pk):
                    continue
                _, task, activation = entry
                if status is None and pk not in self._stop_epochs:
                    self._stop_epochs[pk] = None  # taken away; the epoch is not known here
                    task.cancel()
                elif activation is not None and status == Status.WAITING_FOR_PAUSE:
                    activation.pause_pending = True

    async def _every(self, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except StoreOutage as exc:
                log.debug("periodic job %r: %s", job, exc)
            except Exception:
                log.exception("periodic job %r failed", job)
            await asyncio.sleep(seconds)
