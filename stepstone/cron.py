"""Cron schedules: pure schedule arithmetic, and the routine that fires due schedules.

A firing of ``cron`` at ``scheduledTime`` creates the instance ``"<cron>-<scheduledTime ms>"``
with ``skip_existing``, so however many workers look at the same firing, and however often
they restart, the database holds one instance for it.

Which firing is due, at each look (see ``due_firing``):

- only the latest fire time at or before now is ever considered, so firings missed while
  everything was down collapse into one: the latest, fired once;
- never one from before the current version was registered (a new schedule does not fire for
  its past);
- a firing this process saw become due (its previous look was before it) fires;
- otherwise (a fresh process catching up) it fires only while its instance, had it already
  fired, would still be retained: past that window an absent instance may have fired and
  expired, and firing again would duplicate it. So a firing missed for longer than the
  workflow's shortest retention is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from stepstone.engine.clock import Clock
from stepstone.model.retention import resolve_retention
from stepstone.ops import CreateRequest, Operations
from stepstone.storage.base import Storage, WorkflowRecord
from stepstone.validation import addressable_id_problem

log = logging.getLogger("stepstone.cron")

MAX_CRON_LENGTH = 256
FIELDS_HELP = "minute hour day-of-month month day-of-week, e.g. '*/30 * * * *' or '0 2 * * MON'"
# How often the worker's periodic hook calls ``CronScheduler.tick``; cron's resolution is a
# minute, so a second of lateness is invisible.
TICK_SECONDS = 1.0
# Workflows and account settings change rarely; re-reading them every tick would cost one
# full scan per second per worker.
REFRESH_MS = 5_000


class InvalidCronError(ValueError):
    """A cron expression Stepstone cannot schedule; the message says why and how to fix it."""


def validate(cron: str) -> str:
    """Return ``cron`` if it can be scheduled, else raise ``InvalidCronError``.

    Beyond parsing, the expression must fit in an instance id (``<cron>-<ms>``), whose alphabet
    is letters, digits, space and ``, * / # _ -``: ``?`` and ``@daily`` are not schedulable.
    """
    if not isinstance(cron, str) or not cron.strip():
        raise InvalidCronError(f"empty cron expression; expected five fields: {FIELDS_HELP}")
    if len(cron) > MAX_CRON_LENGTH:
        raise InvalidCronError(f"cron expression longer than {MAX_CRON_LENGTH} characters")
    try:
        croniter(cron, _dt(0))
    except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError) as exc:
        raise InvalidCronError(
            f"{cron!r} is not a valid cron expression ({exc}); expected five fields: {FIELDS_HELP}"
        ) from None
    problem = addressable_id_problem(firing_id(cron, 0))
    if problem:
        raise InvalidCronError(
            f"{cron!r} cannot be scheduled: instance ids of its firings would be invalid"
            f" ({problem}); use only letters, digits, spaces and , * / # _ -"
        )
    return cron


def firing_id(cron: str, scheduled_ms: int) -> str:
    """The deterministic instance id of one firing, as Cloudflare forms it."""
    return f"{cron}-{scheduled_ms}"


def next_fire_ms(cron: str, after_ms: int) -> int:
    """The first fire time strictly after ``after_ms`` (epoch ms, UTC)."""
    # croniter works in whole seconds and its get_next is strict: a fire time after the second
    # that holds after_ms is after after_ms itself.
    return int(croniter(cron, _dt(after_ms // 1000)).get_next(float)) * 1000


def previous_fire_ms(cron: str, at_ms: int) -> int:
    """The latest fire time at or before ``at_ms`` (epoch ms, UTC)."""
    # croniter's get_prev is strict, so start just past the whole second that holds at_ms.
    return int(croniter(cron, _dt(at_ms // 1000 + 1)).get_prev(float)) * 1000


def next_instance_ms(schedules: Sequence[str], now_ms: int) -> dict[str, int]:
    """``schedules[].next_instance`` for a workflow response: each cron's next fire time."""
    result = {}
    for cron in schedules:
        try:
            result[cron] = next_fire_ms(cron, now_ms)
        except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError):
            continue
    return result


def due_firing(
    cron: str, *, now_ms: int, since_ms: int, last_look_ms: int | None, window_ms: int
) -> int | None:
    """The firing of ``cron`` to create now, or None (rules in the module docstring).

    Args:
        now_ms: the time of this look.
        since_ms: when the schedule was registered (the current version's creation).
        last_look_ms: when this process last looked at this schedule, None on its first look.
        window_ms: the shortest retention an instance of this workflow can have.
    """
    fire = previous_fire_ms(cron, now_ms)
    if fire < since_ms:
        return None
    if last_look_ms is not None and last_look_ms < fire:
        return fire
    if now_ms - fire < window_ms:
        return fire
    return None


def _dt(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(slots=True)
class _Watched:
    workflow: WorkflowRecord
    window_ms: int


class CronScheduler:
    """Fires due schedules of every workflow in the database; one per worker process.

    ``tick`` is cheap when nothing is due: pure arithmetic over a cached list of scheduled
    workflows, re-read every ``REFRESH_MS``.
    """

    def __init__(self, storage: Storage, *, clock: Clock | None = None) -> None:
        self.ops = Operations(storage, clock=clock)
        self._watched: list[_Watched] = []
        self._refresh_due = 0
        self._last_look: dict[tuple[int, str, str], int] = {}
        self._attempted: dict[tuple[int, str, str], int] = {}
        self._invalid_logged: set[str] = set()

    def invalidate(self) -> None:
        """Re-read workflows at the next tick (after a deploy or delete)."""
        self._refresh_due = 0

    async def tick(self) -> list[str]:
        """Create the instances of every due firing; return the ids this call created."""
        now = self.ops.now()
        if now >= self._refresh_due:
            await self._refresh(now)
        created: list[str] = []
        for watched in self._watched:
            workflow = watched.workflow
            requests = []
            for cron in workflow.version.schedules:
                key = (workflow.pk, workflow.version.id, cron)
                try:
                    fire = due_firing(
                        cron,
                        now_ms=now,
                        since_ms=workflow.version.created_on,
                        last_look_ms=self._last_look.get(key),
                        window_ms=watched.window_ms,
                    )
                except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError) as exc:
                    self._log_invalid(workflow, cron, str(exc))
                    continue
                self._last_look[key] = now
                if fire is None or self._attempted.get(key) == fire:
                    continue
                if addressable_id_problem(firing_id(cron, fire)):
                    self._log_invalid(workflow, cron, "its firing ids would be invalid")
                    continue
                self._attempted[key] = fire
                requests.append(
                    CreateRequest(
                        id=firing_id(cron, fire),
                        params=b"{}",
                        schedule={"cron": cron, "scheduledTime": fire},
                    )
                )
            if not requests:
                continue
            try:
                _, records = await self.ops.create_instances(
                    workflow.account_id,
                    workflow.name,
                    requests,
                    skip_existing=True,
                    trigger_source="cron",
                )
            except Exception:
                # Forget the attempt so the next tick retries; skip_existing keeps it single.
                for request in requests:
                    cron = (request.schedule or {})["cron"]
                    self._attempted.pop((workflow.pk, workflow.version.id, cron), None)
                log.exception("could not fire the schedules of workflow %s", workflow.name)
                continue
            for record in records:
                log.info("cron fired %s/%s", workflow.name, record.id)
                created.append(record.id)
        return created

    async def _refresh(self, now: int) -> None:
        self._refresh_due = now + REFRESH_MS
        records, _ = await self.ops.storage.list_workflows(None, None, 0, 1_000_000)
        settings: dict[str, tuple[int | None, int | None]] = {}
        watched = []
        for record in records:
            if not record.version.schedules:
                continue
            if record.account_id not in settings:
                settings[record.account_id] = await self.ops.storage.get_account_settings(
                    record.account_id
                )
            window = min(
                resolve_retention(
                    record.version,
                    settings[record.account_id],
                    fallback=record.retention_fallback_ms,
                )
            )
            watched.append(_Watched(record, window))
        self._watched = watched
        live = {(w.workflow.pk, w.workflow.version.id) for w in watched}
        for table in (self._last_look, self._attempted):
            for key in [k for k in table if k[:2] not in live]:
                del table[key]

    def _log_invalid(self, workflow: WorkflowRecord, cron: str, why: str) -> None:
        if cron not in self._invalid_logged:
            self._invalid_logged.add(cron)
            log.error("workflow %s: schedule %r cannot fire: %s", workflow.name, cron, why)
