import pytest

from stepstone.engine.retry import backoff_delay_ms, should_retry
from stepstone.errors import CannotSendEvent, CannotTerminate, InvalidAction
from stepstone.model.statuses import (
    Status,
    check_send_event,
    check_terminate,
    pause_target,
    resume_target,
)


def test_default_policy_waits_10_20_40_80_160_seconds() -> None:
    delays = [backoff_delay_ms(10_000, n, "exponential") for n in range(1, 6)]
    assert delays == [10_000, 20_000, 40_000, 80_000, 160_000]


def test_linear_and_constant() -> None:
    assert [backoff_delay_ms(100, n, "linear") for n in (1, 2, 3)] == [100, 200, 300]
    assert [backoff_delay_ms(100, n, "constant") for n in (1, 2, 3)] == [100, 100, 100]
    with pytest.raises(ValueError):
        backoff_delay_ms(100, 0, "linear")
    with pytest.raises(ValueError):
        backoff_delay_ms(100, 1, "fibonacci")


def test_limit_counts_retries_after_the_first_attempt() -> None:
    assert should_retry(1, 1)
    assert not should_retry(2, 1)
    assert not should_retry(1, 0)


@pytest.mark.parametrize(
    ("status", "target"),
    [
        ("queued", "paused"),
        ("running", "waitingForPause"),
        ("waiting", "paused"),
        ("paused", None),
        ("waitingForPause", None),
    ],
)
def test_pause_table(status: str, target: str | None) -> None:
    assert pause_target(status) == target


@pytest.mark.parametrize("status", ["rollingBack", "complete", "errored", "terminated"])
def test_pause_refused(status: str) -> None:
    with pytest.raises(InvalidAction):
        pause_target(status)


def test_resume_table() -> None:
    assert resume_target("paused") == Status.QUEUED
    assert resume_target("waitingForPause") == Status.RUNNING
    for status in ("queued", "running", "waiting", "complete", "rollingBack"):
        assert resume_target(status) is None


def test_terminal_states_refuse_terminate_and_events() -> None:
    for status in ("complete", "errored", "terminated"):
        with pytest.raises(CannotTerminate):
            check_terminate(status)
        with pytest.raises(CannotSendEvent):
            check_send_event(status)
    for status in ("queued", "running", "paused", "waiting", "rollingBack"):
        check_terminate(status)
        check_send_event(status)
