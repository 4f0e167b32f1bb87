"""``replay_history`` / ``assert_replays``: a production history replayed in a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepstone.engine.recorded import encode_export, select
from stepstone.testing import WorkflowHarness, assert_replays, replay_history
from tests.testing import flows

REPO = Path(__file__).resolve().parents[2]
HISTORY = REPO / "tests" / "engine" / "histories" / "order-waiting-for-approval.json"
EXAMPLES = REPO / "examples" / "stepstone.toml"


async def test_the_committed_history_agrees_with_the_examples() -> None:
    verdicts = await replay_history(HISTORY, EXAMPLES)
    assert_replays(verdicts)
    (verdict,) = verdicts
    assert verdict.next_steps == ['step.wait_for_event "await approval-1"']


async def test_a_divergence_fails_the_test_naming_the_instance() -> None:
    verdicts = await replay_history(HISTORY, {"order-workflow": flows.Approval})
    with pytest.raises(AssertionError, match=r"1 of 1 instance\(s\) diverge:\n  order-workflow/"):
        assert_replays(verdicts)
    assert 'step.do "reserve-1"' in str(verdicts[0].divergence)


async def test_exported_bytes_and_a_missing_workflow() -> None:
    async with await WorkflowHarness.open() as harness:
        await harness.register("approval", flows.Approval)
        await harness.create("approval", id="x")
        items = [i async for i in select(harness.engine.storage, None)]
    data = encode_export(items)
    assert_replays(await replay_history(data, {"approval": flows.Approval}))
    (missing,) = await replay_history(data, {})
    assert missing.divergence == "no code given for workflow 'approval'"
