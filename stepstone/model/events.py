"""The types of the events in an instance's history: one vocabulary for every writer and reader.

The names are Cloudflare's (spec 3.4: what the subscribe stream shows a client), plus Stepstone's
own ``step_repaired``. They are stored as text, in ``instance_events.type``, and compared with
what the log gives back, a plain ``str``.

``Final`` str constants in a namespace class, not a ``StrEnum``: a StrEnum would bind and
serialise just as well (sqlite3 and asyncpg take it as text, orjson writes its string, an
f-string gives its value), but on Python 3.11 each ``EventType.X`` of an enum is a descriptor
call, about four times a class attribute's, and ``history.fold`` compares every event of a log
on each activation: it took 2.3 times as long. A constant here is the very string a literal
was, so nothing it reaches (a driver, a JSON encoder, a dict key, the memory store) can tell.

tests/model/test_event_vocabulary.py checks that the migrations' SQL, the stores' SQL and the
dashboard's script name no type outside this one, and that each type is written somewhere.
The migrations keep their literal types: a migration is history and never changes.
"""

from __future__ import annotations

from typing import Final


class EventType:
    """A namespace, never instantiated: each name below is the stored string itself."""

    # The workflow lifecycle: instance-level events (no step kind or name).
    # Created, or restarted: a new run begins.
    WORKFLOW_QUEUED: Final = "workflow_queued"
    # A worker took the instance for the first time.
    WORKFLOW_STARTED: Final = "workflow_started"
    # A resume; after a pause its ``pausedMs`` moves every timer pending meanwhile.
    WORKFLOW_RUNNING: Final = "workflow_running"
    WORKFLOW_PAUSED: Final = "workflow_paused"
    # A pause asked while a worker holds the instance: its steps in flight finish first.
    WORKFLOW_WAITING_FOR_PAUSE: Final = "workflow_waiting_for_pause"
    # The worker let go until a timer or an event (a sleep, a wait, a retry delay).
    WORKFLOW_WAITING: Final = "workflow_waiting"
    WORKFLOW_COMPLETED: Final = "workflow_completed"
    WORKFLOW_ERRORED: Final = "workflow_errored"
    WORKFLOW_TERMINATED: Final = "workflow_terminated"

    # A ``step.do``'s attempts.
    # Written with the first attempt: the step's config, kept for every retry and replay.
    STEP_STARTED: Final = "step_started"
    ATTEMPT_STARTED: Final = "attempt_started"
    ATTEMPT_COMPLETED: Final = "attempt_completed"
    # With ``retryAt`` when a retry follows; without, the step's error follows.
    ATTEMPT_ERRORED: Final = "attempt_errored"
    # Its output (or a byte stream's size); a repair appends one more carrying ``repaired``.
    STEP_COMPLETED: Final = "step_completed"
    # The step failed for good: its retries spent, or the error was non-retryable.
    STEP_ERRORED: Final = "step_errored"

    # ``step.sleep`` and ``step.sleep_until``.
    SLEEP_STARTED: Final = "sleep_started"
    SLEEP_COMPLETED: Final = "sleep_completed"

    # ``step.wait_for_event``.
    WAIT_STARTED: Final = "wait_started"
    # The event arrived; it is kept in the completion, which replay returns.
    WAIT_COMPLETED: Final = "wait_completed"
    WAIT_TIMED_OUT: Final = "wait_timed_out"

    # The rollback phase, instance-level: it starts once (its trigger error and how many
    # rollbacks run) and ends completed or errored.
    ROLLBACK_STARTED: Final = "rollback_started"
    ROLLBACK_COMPLETED: Final = "rollback_completed"
    ROLLBACK_ERRORED: Final = "rollback_errored"
    # Each rollback's own step and attempt events: a step's events with ``ROLLBACK_PREFIX``,
    # under the step kind "rollback" and the forward step's name.
    ROLLBACK_STEP_STARTED: Final = "rollback_step_started"
    ROLLBACK_ATTEMPT_STARTED: Final = "rollback_attempt_started"
    ROLLBACK_ATTEMPT_COMPLETED: Final = "rollback_attempt_completed"
    ROLLBACK_ATTEMPT_ERRORED: Final = "rollback_attempt_errored"
    ROLLBACK_STEP_COMPLETED: Final = "rollback_step_completed"
    ROLLBACK_STEP_ERRORED: Final = "rollback_step_errored"

    # Repair (Stepstone's extension): the instance-level entry saying who repaired which step;
    # what replay reads is the step's new ``step_completed``.
    STEP_REPAIRED: Final = "step_repaired"


# What a rollback puts before a step's event types (the engine writes a rollback's attempts
# with the same code as a step's).
ROLLBACK_PREFIX: Final = "rollback_"

# A step's events that a rollback repeats with ``ROLLBACK_PREFIX``.
STEP_EVENTS: Final = (
    EventType.STEP_STARTED,
    EventType.STEP_COMPLETED,
    EventType.STEP_ERRORED,
    EventType.ATTEMPT_STARTED,
    EventType.ATTEMPT_COMPLETED,
    EventType.ATTEMPT_ERRORED,
)

# An instance's run ends with one of these; the event stream closes after it.
TERMINAL_EVENTS: Final = frozenset(
    {EventType.WORKFLOW_COMPLETED, EventType.WORKFLOW_ERRORED, EventType.WORKFLOW_TERMINATED}
)

# Every type above.
ALL_EVENTS: Final[frozenset[str]] = frozenset(
    value for name, value in vars(EventType).items() if name.isupper()
)
# Spec 3.4's types, which a Cloudflare client knows (and may filter the event stream by).
SPEC_EVENTS: Final = ALL_EVENTS - {EventType.STEP_REPAIRED}
