"""Test workflows in-process: a fake clock, step mocks and failures, and recorded steps to
inspect (docs/testing.md). The pytest plugin offers ``stepstone_harness`` as a fixture."""

from stepstone.testing.harness import (
    AttemptView,
    HarnessError,
    HarnessInstance,
    StepView,
    WorkflowHarness,
)
from stepstone.testing.replay import assert_replays, replay_history

__all__ = [
    "AttemptView",
    "HarnessError",
    "HarnessInstance",
    "StepView",
    "WorkflowHarness",
    "assert_replays",
    "replay_history",
]
