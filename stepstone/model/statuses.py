"""Instance statuses and the action x status table (spec 1.2 and 7.13), as pure decisions."""

from __future__ import annotations

from enum import StrEnum

from stepstone.errors import CannotSendEvent, CannotTerminate, InvalidAction


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    ERRORED = "errored"
    TERMINATED = "terminated"
    COMPLETE = "complete"
    WAITING_FOR_PAUSE = "waitingForPause"
    WAITING = "waiting"
    ROLLING_BACK = "rollingBack"


TERMINAL: frozenset[str] = frozenset({Status.COMPLETE, Status.ERRORED, Status.TERMINATED})
ALL_STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
# What terminate-all walks, in this order: the statuses of Cloudflare's list that are not final
# (rollingBack, Stepstone's own, is not walked).
TERMINABLE: tuple[str, ...] = (
    Status.QUEUED,
    Status.RUNNING,
    Status.PAUSED,
    Status.WAITING_FOR_PAUSE,
    Status.WAITING,
)
# Statuses in which a worker holds (or is about to take) the instance.
ACTIVE: frozenset[str] = frozenset({Status.RUNNING, Status.WAITING_FOR_PAUSE, Status.ROLLING_BACK})


class Action(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    TERMINATE = "terminate"
    RESTART = "restart"


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def pause_target(status: str) -> str | None:
    """The status a pause moves to, or None for a no-op. Raises for a rollback in progress."""
    if status == Status.RUNNING:
        # A worker holds it: steps in flight finish first, the worker then parks it.
        return Status.WAITING_FOR_PAUSE
    if status in (Status.QUEUED, Status.WAITING):
        return Status.PAUSED
    if status == Status.ROLLING_BACK:
        raise InvalidAction("Cannot pause an instance while it is rolling back")
    if status in TERMINAL:
        raise InvalidAction(f"Cannot pause an instance that is {status}")
    return None


def resume_target(status: str) -> str | None:
    """The status a resume moves to, or None for a no-op."""
    if status == Status.WAITING_FOR_PAUSE:
        return Status.RUNNING
    if status == Status.PAUSED:
        return Status.QUEUED
    return None


def check_terminate(status: str) -> None:
    if status in TERMINAL:
        raise CannotTerminate("Cannot terminate instance since it is in a finite state")


def check_send_event(status: str) -> None:
    if status in TERMINAL:
        raise CannotSendEvent(f"Cannot send an event to an instance that is {status}")
