"""The storage contract, on every backend: what base.py's docstrings promise."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from stepstone.errors import CannotSendEvent, InstanceAlreadyExists
from stepstone.model.retention import DEFAULT_RETENTION_MS
from stepstone.storage.base import (
    Conflict,
    Fenced,
    InstanceQuery,
    NewEvent,
    NewInstance,
    Release,
    Storage,
    TokenRecord,
    Transition,
    WorkflowChanged,
    WorkflowDefinition,
)
from tests.storage.conftest import LEASE, NOW, Fixture, ids

# --- workflows and versions ------------------------------------------------------------------


async def test_register_adds_a_version_each_time_and_the_newest_is_current(
    storage: Storage,
) -> None:
    first = await storage.register_workflow(
        "acct", "orders", WorkflowDefinition("A", "mod.a", schedules=("0 * * * *",)), NOW
    )
    second = await storage.register_workflow(
        "acct", "orders", WorkflowDefinition("B", "mod.b", limits_steps=7), NOW + 5
    )
    assert second.pk == first.pk and second.id == first.id
    assert second.created_on == NOW and second.modified_on == NOW + 5
    assert second.version.class_name == "B" and second.version.limits_steps == 7
    assert first.version.schedules == ("0 * * * *",)
    versions, total = await storage.list_versions(first.pk, 0, 10)
    assert total == 2
    assert [v.id for v in versions] == [second.version.id, first.version.id]
    same_ms = await storage.register_workflow(
        "acct", "orders", WorkflowDefinition("C", "m"), NOW + 5
    )
    versions, total = await storage.list_versions(first.pk, 0, 2)
    assert total == 3 and [v.class_name for v in versions] == ["C", "B"]
    versions, _ = await storage.list_versions(first.pk, 2, 2)
    assert [v.class_name for v in versions] == ["A"]
    got = await storage.get_version(first.pk, first.version.id)
    assert got == first.version
    assert await storage.get_version(first.pk, "nope") is None
    current = await storage.get_workflow("acct", "orders")
    assert current is not None and current.version.id == same_ms.version.id


async def test_list_workflows_by_name_with_search_account_and_pages(storage: Storage) -> None:
    for account, name in [("a", "beta"), ("a", "alpha"), ("a", "gamma-beta"), ("b", "beta")]:
        await storage.register_workflow(account, name, WorkflowDefinition("C", "m"), NOW)
    rows, total = await storage.list_workflows("a", None, 0, 10)
    assert [w.name for w in rows] == ["alpha", "beta", "gamma-beta"] and total == 3
    rows, total = await storage.list_workflows("a", "beta", 0, 10)
    assert [w.name for w in rows] == ["beta", "gamma-beta"] and total == 2
    rows, total = await storage.list_workflows(None, None, 1, 2)
    assert [(w.account_id, w.name) for w in rows] == [("a", "beta"), ("b", "beta")]
    assert total == 4
    assert await storage.get_workflow("b", "alpha") is None


async def test_delete_workflow_removes_versions_instances_and_history(fx: Fixture) -> None:
    storage = fx.storage
    await fx.create("i1", "i2")
    pk = (await fx.get("i1")).pk
    other = await storage.register_workflow("acct", "other", WorkflowDefinition("C", "m"), NOW)
    await storage.create_instances(
        other.pk, other.version.id, [NewInstance("x", b"1")], NOW, skip_existing=False
    )
    assert await storage.delete_workflow("acct", "orders") is True
    assert await storage.get_workflow("acct", "orders") is None
    assert await storage.get_instance(fx.workflow.pk, "i1") is None
    assert await storage.load_events(pk) == []
    assert await storage.list_versions(fx.workflow.pk, 0, 10) == ([], 0)
    assert await storage.count_instances(fx.workflow.pk) == {}
    assert await storage.delete_workflow("acct", "orders") is False
    assert await storage.get_instance(other.pk, "x") is not None


# --- creating and reading instances ----------------------------------------------------------


async def test_create_writes_queued_rows_with_their_queued_event(fx: Fixture) -> None:
    params = orjson.dumps({"name": "zoë", "n": [1, 2.5, None], "big": 2**60})
    created = await fx.storage.create_instances(
        fx.workflow.pk,
        fx.workflow.version.id,
        [NewInstance("i1", params, trigger_source="cron", schedule=b'{"cron":"* * * * *"}')],
        NOW,
        skip_existing=False,
    )
    assert [r.id for r in created] == ["i1"]
    record = await fx.get("i1")
    assert created[0] == record  # what create returns is what it stored
    assert record.status == "queued" and record.params == params
    assert record.schedule == b'{"cron":"* * * * *"}' and record.trigger_source == "cron"
    assert record.version_id == fx.workflow.version.id
    assert (record.created_on, record.started_on, record.ended_on) == (NOW, None, None)
    events = await fx.storage.load_events(record.pk)
    assert [e.type for e in events] == ["workflow_queued"]
    assert orjson.loads(events[0].data or b"") == {
        "versionId": fx.workflow.version.id,
        "trigger": {"source": "cron"},
    }
    workflow = await fx.storage.get_workflow("acct", "orders")
    assert workflow is not None and workflow.triggered_on == NOW
    assert await fx.storage.count_instances(fx.workflow.pk) == {"queued": 1}
    assert await fx.storage.get_instance(fx.workflow.pk, "missing") is None


async def test_create_with_an_existing_id_raises_and_writes_nothing(fx: Fixture) -> None:
    await fx.create("taken")
    with pytest.raises(InstanceAlreadyExists):
        await fx.create("fresh", "taken", now=NOW + 1)
    assert await fx.storage.get_instance(fx.workflow.pk, "fresh") is None
    assert await fx.storage.count_instances(fx.workflow.pk) == {"queued": 1}
    with pytest.raises(InstanceAlreadyExists):
        await fx.create("twin", "twin")
    assert await fx.storage.get_instance(fx.workflow.pk, "twin") is None


async def test_creates_made_at_once_each_succeed_or_fail_alone(fx: Fixture) -> None:
    await fx.create("taken")
    outcomes = await asyncio.gather(
        *(fx.create(f"early-{n}") for n in range(8)),
        fx.create("fresh-1", "taken"),
        fx.create("fresh-2"),
        fx.create("taken", "fresh-3", skip=True),
        fx.create("same"),
        fx.create("same"),
        return_exceptions=True,
    )
    assert outcomes[:8] == [[f"early-{n}"] for n in range(8)]
    clash, fresh, skipping, same_a, same_b = outcomes[8:]
    assert isinstance(clash, InstanceAlreadyExists)
    assert (fresh, skipping) == (["fresh-2"], ["fresh-3"])
    assert sorted(type(o).__name__ for o in (same_a, same_b)) == ["InstanceAlreadyExists", "list"]
    assert await fx.storage.get_instance(fx.workflow.pk, "fresh-1") is None
    assert await fx.storage.count_instances(fx.workflow.pk) == {"queued": 12}


async def test_a_create_of_a_version_no_longer_current_raises_and_writes_nothing(
    fx: Fixture,
) -> None:
    await fx.create("taken")
    again = await fx.storage.register_workflow(
        "acct", "orders", WorkflowDefinition("OrderWorkflowV2", "shop.orders"), NOW + 1
    )
    assert again.pk == fx.workflow.pk and again.version.id != fx.workflow.version.id
    # Alone, skipping taken ids, and many at once (a store may merge those into one write).
    with pytest.raises(WorkflowChanged):
        await fx.create("a")
    with pytest.raises(WorkflowChanged):
        await fx.create("taken", "b", skip=True)
    outcomes = await asyncio.gather(
        *(fx.create(f"c-{n}", skip=n % 2 == 0) for n in range(6)), return_exceptions=True
    )
    assert [type(o) for o in outcomes] == [WorkflowChanged] * 6
    assert await fx.storage.count_instances(fx.workflow.pk) == {"queued": 1}
    # Every id taken is not a changed version: skipping them creates nothing, and says so.
    current = Fixture(fx.storage, again)
    assert await current.create("taken", skip=True) == []
    assert await current.create("a") == ["a"]
    assert (await current.get("a")).version_id == again.version.id
    await fx.storage.delete_workflow("acct", "orders")
    with pytest.raises(WorkflowChanged):
        await current.create("d")


async def test_create_skip_existing_leaves_existing_out(fx: Fixture) -> None:
    await fx.create("taken", params=b'"old"')
    created = await fx.create("a", "taken", "b", "a", params=b'"new"', skip=True)
    assert created == ["a", "b"]
    assert (await fx.get("taken")).params == b'"old"'
    assert await fx.storage.count_instances(fx.workflow.pk) == {"queued": 3}
    assert await fx.event_types("taken") == ["workflow_queued"]


async def test_same_id_in_two_workflows_is_two_instances(fx: Fixture) -> None:
    other = await fx.storage.register_workflow("acct", "b", WorkflowDefinition("C", "m"), NOW)
    await fx.create("same")
    created = await fx.storage.create_instances(
        other.pk, other.version.id, [NewInstance("same", b"2")], NOW, skip_existing=False
    )
    assert [r.id for r in created] == ["same"]


async def test_list_instances_keyset_pages_both_ways(fx: Fixture) -> None:
    # Three share a created_on, so the id breaks the tie.
    for n, instance_id in enumerate(["e", "d", "c", "b", "a"]):
        await fx.create(instance_id, now=NOW + min(n, 2))
    storage, wf = fx.storage, fx.workflow.pk
    newest = await storage.list_instances(wf, InstanceQuery(limit=2))
    assert ids(newest) == ["c", "b"]
    last = newest[-1]
    rest = await storage.list_instances(
        wf, InstanceQuery(after=(last.created_on, last.id), limit=10)
    )
    assert ids(rest) == ["a", "d", "e"]
    oldest = await storage.list_instances(wf, InstanceQuery(ascending=True, limit=3))
    assert ids(oldest) == ["e", "d", "a"]
    cursor = (oldest[-1].created_on, oldest[-1].id)
    after = await storage.list_instances(wf, InstanceQuery(ascending=True, after=cursor))
    assert ids(after) == ["b", "c"]
    paged = await storage.list_instances(wf, InstanceQuery(offset=3, limit=1))
    assert ids(paged) == ["d"]


async def test_list_instances_filters_status_and_dates(fx: Fixture) -> None:
    for n in range(6):
        await fx.create(f"i{n}", now=NOW + n * 1000)
    claim = await fx.claim_one("i0", now=NOW)
    await fx.storage.release_instance(claim, Release("complete", output=b"1"), NOW)
    storage, wf = fx.storage, fx.workflow.pk
    queued = await storage.list_instances(wf, InstanceQuery(status="queued"))
    assert ids(queued) == ["i5", "i4", "i3", "i2", "i1"]
    done = await storage.list_instances(wf, InstanceQuery(status="complete"))
    assert ids(done) == ["i0"]
    window = InstanceQuery(created_from=NOW + 1000, created_to=NOW + 3000, ascending=True)
    assert ids(await storage.list_instances(wf, window)) == ["i1", "i2", "i3"]
    both = InstanceQuery(status="queued", created_to=NOW + 1000)
    assert ids(await storage.list_instances(wf, both)) == ["i1"]
    assert await storage.count_instances(wf) == {"queued": 5, "complete": 1}


async def test_load_events_after_a_cursor_with_a_limit(fx: Fixture) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i")
    events = [NewEvent(f"e{n}", NOW + n, b"%d" % n, "do", f"s-{n}") for n in range(5)]
    assert await fx.storage.record_progress(claim, events) == "running"
    every = await fx.storage.load_events(claim.instance.pk)
    assert [e.type for e in every] == ["workflow_queued", "e0", "e1", "e2", "e3", "e4"]
    assert [e.event_id for e in every] == sorted(e.event_id for e in every)
    third = every[2]
    assert (third.ts, third.step_kind, third.step_name, third.data) == (NOW + 1, "do", "s-1", b"1")
    page = await fx.storage.load_events(claim.instance.pk, every[2].event_id, 2)
    assert [e.type for e in page] == ["e2", "e3"]


# --- claiming --------------------------------------------------------------------------------


async def test_claim_woken_before_new_then_oldest_first(fx: Fixture) -> None:
    await fx.create("woken", now=NOW - 10)
    claim = await fx.claim_one("woken", now=NOW - 10)
    # A release always gives priority 0: the instance has started and should finish first.
    await fx.storage.release_instance(claim, Release("waiting", runnable_at=NOW + 3), NOW - 9)
    await fx.create("new-old", now=NOW)
    await fx.create("new-young", now=NOW + 1)
    claims = await fx.claim(limit=2, now=NOW + 10)
    assert sorted(c.instance.id for c in claims) == ["new-old", "woken"]
    assert {c.instance.status for c in claims} == {"running"}
    rest = await fx.claim(now=NOW + 10)
    assert [c.instance.id for c in rest] == ["new-young"]


async def test_claim_respects_runnable_at_limit_and_workflow_scope(fx: Fixture) -> None:
    other = await fx.storage.register_workflow("acct", "other", WorkflowDefinition("C", "m"), NOW)
    await fx.storage.create_instances(
        other.pk, other.version.id, [NewInstance("elsewhere", b"1")], NOW, skip_existing=False
    )
    await fx.create("a", "b", "c", now=NOW)
    assert await fx.claim(now=NOW - 1) == []
    assert await fx.storage.claim_runnable("w", 0, NOW, LEASE, None) == []
    assert await fx.storage.claim_runnable("w", 5, NOW, LEASE, []) == []
    two = await fx.claim(limit=2)
    assert len(two) == 2
    three = await fx.storage.claim_runnable("w2", 10, NOW, LEASE, None)
    assert sorted(c.instance.id for c in three) == ["c", "elsewhere"]


async def test_claim_marks_running_and_sets_lease_epoch_started(fx: Fixture) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i", owner="w1", now=NOW + 5)
    assert claim.owner == "w1" and claim.epoch >= 1
    record = await fx.get("i")
    assert record.status == "running" and record.started_on == NOW + 5
    # A live lease keeps others away.
    assert await fx.claim("w2", now=NOW + 5 + LEASE - 1) == []


async def test_expired_lease_is_taken_over_and_the_old_claim_is_fenced(fx: Fixture) -> None:
    await fx.create("i")
    old = await fx.claim_one("i", owner="w1")
    new = await fx.claim_one("i", owner="w2", now=NOW + LEASE + 1)
    assert new.epoch > old.epoch
    assert (await fx.get("i")).started_on == NOW
    before = await fx.event_types("i")
    with pytest.raises(Fenced):
        await fx.storage.record_progress(old, [NewEvent("step_completed", NOW, b"1", "do", "x")])
    with pytest.raises(Fenced):
        await fx.storage.release_instance(old, Release("complete", output=b"1"), NOW + LEASE + 2)
    with pytest.raises(Fenced):
        await fx.storage.set_active_status(old, "rollingBack")
    with pytest.raises(Fenced):
        await fx.storage.record_stream_chunk(old, "s", 0, b"x")
    with pytest.raises(Fenced):
        await fx.storage.consume_event(old, "t", NewEvent("wait_completed", NOW))
    fx.storage.record_progress_nowait(old, [NewEvent("attempt_started", NOW)])
    assert await fx.storage.record_progress(new, [NewEvent("mine", NOW)]) == "running"
    assert await fx.event_types("i") == [*before, "mine"]
    assert (await fx.get("i")).status == "running"
    held = await fx.storage.renew_leases("w1", [old], NOW + LEASE + 3, LEASE)
    assert held == {old.instance.pk: None}


async def test_concurrent_claimers_never_share_an_instance(fx: Fixture) -> None:
    await fx.create(*[f"i{n:02d}" for n in range(40)])
    results = await asyncio.gather(*(fx.claim(f"w{n}", limit=7) for n in range(8)))
    claimed = [c.instance.id for claims in results for c in claims]
    assert len(claimed) == 40 and len(set(claimed)) == 40


async def test_renew_leases_extends_and_reports_status(fx: Fixture) -> None:
    await fx.create("a", "b")
    claims = await fx.claim("w1")
    a, b = sorted(claims, key=lambda c: c.instance.id)
    await fx.storage.transition_instance(
        b.instance.pk, "running", Transition("waitingForPause"), NOW + 1
    )
    held = await fx.storage.renew_leases("w1", [a, b], NOW + LEASE - 10, LEASE)
    assert held == {a.instance.pk: "running", b.instance.pk: "waitingForPause"}
    # Renewed: still held just after the first lease would have ended.
    assert await fx.claim("w2", now=NOW + LEASE + 5) == []
    assert await fx.storage.renew_leases("intruder", [a], NOW, LEASE) == {a.instance.pk: None}
    taken = await fx.claim("w2", now=NOW + 2 * LEASE)
    assert len(taken) == 2


# --- fenced writes ---------------------------------------------------------------------------


async def test_operator_release_worker_fences_the_claim(fx: Fixture) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i")
    await fx.storage.transition_instance(
        claim.instance.pk,
        "running",
        Transition(
            "terminated",
            release_worker=True,
            ended=True,
            events=[NewEvent("workflow_terminated", NOW + 1)],
        ),
        NOW + 1,
    )
    with pytest.raises(Fenced):
        await fx.storage.record_progress(claim, [NewEvent("step_completed", NOW)])
    with pytest.raises(Fenced):
        await fx.storage.release_instance(claim, Release("complete", output=b"1"), NOW + 2)
    record = await fx.get("i")
    assert record.status == "terminated" and record.output is None
    assert record.ended_on == NOW + 1
    assert await fx.event_types("i") == ["workflow_queued", "workflow_terminated"]
    assert await fx.claim(now=NOW + 10**9) == []


async def test_nowait_progress_commits_before_the_next_awaited_write(fx: Fixture) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i")
    for n in range(5):
        fx.storage.record_progress_nowait(claim, [NewEvent(f"q{n}", NOW)])
    await fx.storage.record_progress(claim, [NewEvent("awaited", NOW)])
    fx.storage.record_progress_nowait(claim, [NewEvent("q5", NOW)])
    await fx.storage.release_instance(claim, Release("complete", output=b"{}"), NOW)
    assert await fx.event_types("i") == [
        "workflow_queued",
        "q0",
        "q1",
        "q2",
        "q3",
        "q4",
        "awaited",
        "q5",
    ]


async def test_nowait_progress_keeps_its_order_when_others_write_meanwhile(fx: Fixture) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i")
    fx.storage.record_progress_nowait(claim, [NewEvent("attempt_started", NOW)])
    # Another client's create, asked for first, must not carry (and reorder) this claim's
    # queued events, however the store schedules its writes.
    creating = asyncio.ensure_future(fx.create("other"))
    await asyncio.sleep(0)  # the create is under way
    await fx.storage.record_progress(claim, [NewEvent("step_completed", NOW)])
    assert await creating == ["other"]
    assert await fx.event_types("i") == ["workflow_queued", "attempt_started", "step_completed"]


async def test_nowait_progress_outlives_a_failed_write_that_carried_it(fx: Fixture) -> None:
    await fx.create("i", "other")
    claim = await fx.claim_one("i")
    other = await fx.get("other")
    fx.storage.record_progress_nowait(claim, [NewEvent("attempt_started", NOW)])
    # An operator's action refused for another instance (SQLite writes the queue with it)...
    with pytest.raises(Conflict):
        await fx.storage.transition_instance(other.pk, "running", Transition("paused"), NOW)
    # ...must not take this claim's queued events down with it.
    await fx.storage.record_progress(claim, [NewEvent("step_completed", NOW)])
    assert await fx.event_types("i") == ["workflow_queued", "attempt_started", "step_completed"]
    assert await fx.event_types("other") == ["workflow_queued"]


async def test_nowait_progress_lands_without_a_later_write(fx: Fixture) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i")
    fx.storage.record_progress_nowait(claim, [NewEvent("attempt_started", NOW)])
    async with asyncio.timeout(5):
        while await fx.event_types("i") != ["workflow_queued", "attempt_started"]:
            await asyncio.sleep(0.01)


async def test_set_active_status(fx: Fixture) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i")
    await fx.storage.set_active_status(claim, "rollingBack")
    assert (await fx.get("i")).status == "rollingBack"
    assert await fx.storage.record_progress(claim, []) == "rollingBack"


async def test_stream_chunks_and_chunk_zero_clears_a_stale_attempt(fx: Fixture) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i")
    for n, data in enumerate([b"a" * 10, b"\x00\xff", b"tail"]):
        await fx.storage.record_stream_chunk(claim, "dl-1", n, data)
    await fx.storage.record_stream_chunk(claim, "other-1", 0, b"keep")
    pk = claim.instance.pk
    assert [c async for c in fx.storage.read_stream(pk, "dl-1", 3)] == [
        b"a" * 10,
        b"\x00\xff",
        b"tail",
    ]
    assert [c async for c in fx.storage.read_stream(pk, "dl-1", 2)] == [b"a" * 10, b"\x00\xff"]
    # A retry starts over: its chunk 0 drops chunks 1 and 2 of the interrupted attempt.
    await fx.storage.record_stream_chunk(claim, "dl-1", 0, b"retry")
    assert [c async for c in fx.storage.read_stream(pk, "dl-1", 1)] == [b"retry"]
    with pytest.raises(RuntimeError):
        _ = [c async for c in fx.storage.read_stream(pk, "dl-1", 2)]
    assert [c async for c in fx.storage.read_stream(pk, "other-1", 1)] == [b"keep"]


# --- events ----------------------------------------------------------------------------------


async def test_events_are_consumed_fifo_per_type(fx: Fixture) -> None:
    await fx.create("i")
    pk = (await fx.get("i")).pk
    assert await fx.storage.deliver_event(pk, "approve", b'{"n":1}', NOW + 1)
    assert await fx.storage.deliver_event(pk, "reject", b'"r"', NOW + 2)
    assert await fx.storage.deliver_event(pk, "approve", b'{"n":2}', NOW + 3)
    claim = await fx.claim_one("i", now=NOW + 5)
    done = NewEvent("wait_completed", NOW + 6, b'{"x":1}', "waitForEvent", "w-1")
    first = await fx.storage.consume_event(claim, "approve", done)
    assert first is not None and (first.type, first.payload, first.ts) == (
        "approve",
        b'{"n":1}',
        NOW + 1,
    )
    second = await fx.storage.consume_event(claim, "approve", done)
    assert second is not None and second.payload == b'{"n":2}'
    assert await fx.storage.consume_event(claim, "approve", done) is None
    rejected = await fx.storage.consume_event(claim, "reject", done)
    assert rejected is not None and rejected.payload == b'"r"'
    events = await fx.storage.load_events(pk)
    completions = [e for e in events if e.type == "wait_completed"]
    assert len(completions) == 3
    assert orjson.loads(completions[0].data or b"") == {
        "x": 1,
        "event": {"type": "approve", "payload": {"n": 1}, "timestamp": NOW + 1},
    }
    assert (completions[0].step_kind, completions[0].step_name) == ("waitForEvent", "w-1")


async def test_event_makes_a_waiting_instance_runnable_now(fx: Fixture) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i")
    far = NOW + 86_400_000
    stored = await fx.storage.release_instance(claim, Release("waiting", runnable_at=far), NOW + 1)
    assert stored == "waiting"
    assert await fx.claim(now=NOW + 2) == []
    assert await fx.storage.deliver_event(claim.instance.pk, "go", b"1", NOW + 3)
    woken = await fx.claim(now=NOW + 3)
    assert [c.instance.id for c in woken] == ["i"]


async def test_event_leaves_queued_and_paused_schedules_alone(fx: Fixture) -> None:
    await fx.create("q", now=NOW + 100)
    assert await fx.storage.deliver_event((await fx.get("q")).pk, "go", b"1", NOW)
    assert await fx.claim(now=NOW + 50) == []
    await fx.create("p")
    claim = await fx.claim_one("p")
    await fx.storage.release_instance(claim, Release("paused"), NOW)
    assert await fx.storage.deliver_event(claim.instance.pk, "go", b"1", NOW + 1)
    assert [c.instance.id for c in await fx.claim(now=NOW + 200)] == ["q"]


async def test_event_to_a_finished_or_missing_instance(fx: Fixture) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i")
    await fx.storage.release_instance(claim, Release("complete", output=b"1"), NOW)
    with pytest.raises(CannotSendEvent):
        await fx.storage.deliver_event(claim.instance.pk, "go", b"1", NOW)
    assert await fx.storage.deliver_event(10**12, "go", b"1", NOW) is False


async def test_event_delivered_during_the_activation_makes_a_release_runnable(
    fx: Fixture,
) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i")
    # The activation looked for the event before it arrived, then releases to wait for it.
    assert await fx.storage.consume_event(claim, "go", NewEvent("wait_completed", NOW)) is None
    await fx.storage.deliver_event(claim.instance.pk, "go", b"1", NOW + 1)
    far = NOW + 86_400_000
    await fx.storage.release_instance(claim, Release("waiting", runnable_at=far), NOW + 2)
    again = await fx.claim(now=NOW + 2)
    assert [c.instance.id for c in again] == ["i"]
    # Without a delivery the wake-up time holds.
    await fx.storage.release_instance(again[0], Release("waiting", runnable_at=far), NOW + 3)
    assert await fx.claim(now=NOW + 4) == []


# --- releasing -------------------------------------------------------------------------------


async def test_release_to_waiting_while_pause_requested_stores_paused(fx: Fixture) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i")
    await fx.storage.transition_instance(
        claim.instance.pk, "running", Transition("waitingForPause"), NOW + 1
    )
    stored = await fx.storage.release_instance(
        claim,
        Release("waiting", runnable_at=NOW + 10, events=[NewEvent("workflow_waiting", NOW)]),
        NOW + 2,
    )
    assert stored == "paused"
    record = await fx.get("i")
    assert (record.status, record.paused_at) == ("paused", NOW + 2)
    assert (await fx.event_types("i"))[-2:] == ["workflow_waiting", "workflow_paused"]
    assert await fx.claim(now=NOW + 10**9) == []
    assert await fx.storage.next_wake_at([fx.workflow.pk]) is None


async def test_release_terminal_records_outcome_and_never_runs_again(fx: Fixture) -> None:
    await fx.create("ok", "bad")
    claims = {c.instance.id: c for c in await fx.claim()}
    await fx.storage.release_instance(
        claims["ok"],
        Release("complete", output=b'{"r":1}', events=[NewEvent("workflow_completed", NOW + 1)]),
        NOW + 1,
    )
    await fx.storage.release_instance(
        claims["bad"], Release("errored", error=b'{"name":"Error"}'), NOW + 2
    )
    ok, bad = await fx.get("ok"), await fx.get("bad")
    assert (ok.status, ok.output, ok.ended_on) == ("complete", b'{"r":1}', NOW + 1)
    assert (bad.status, bad.error, bad.ended_on) == ("errored", b'{"name":"Error"}', NOW + 2)
    assert await fx.claim(now=NOW + 10**9) == []
    assert await fx.storage.next_wake_at(None) is None


async def test_next_wake_at_ignores_leased_instances(fx: Fixture) -> None:
    await fx.create("a", now=NOW + 500)
    await fx.create("b", now=NOW + 100)
    assert await fx.storage.next_wake_at([fx.workflow.pk]) == NOW + 100
    assert await fx.storage.next_wake_at([]) is None
    claim = await fx.claim_one("b", now=NOW + 100)
    assert await fx.storage.next_wake_at(None) == NOW + 500
    await fx.storage.release_instance(claim, Release("waiting", runnable_at=NOW + 300), NOW + 101)
    assert await fx.storage.next_wake_at(None) == NOW + 300


async def test_a_claim_looks_ahead_as_next_wake_at_would_after_it(fx: Fixture) -> None:
    await fx.create("now1", "now2")
    await fx.create("later", now=NOW + 300)
    await fx.create("latest", now=NOW + 900)
    pks = [fx.workflow.pk]
    # A full claim: its caller claims again at once, so it is told no wake-up.
    claims, wake = await fx.storage.claim_and_next_wake("w", 1, NOW, LEASE, pks)
    assert ([c.instance.id for c in claims], wake) == (["now1"], None)
    claims, wake = await fx.storage.claim_and_next_wake("w", 5, NOW, LEASE, pks)
    assert [c.instance.id for c in claims] == ["now2"]
    assert wake == NOW + 300 == await fx.storage.next_wake_at(pks)
    claims, wake = await fx.storage.claim_and_next_wake("w", 5, NOW + 1000, LEASE, None)
    assert (sorted(c.instance.id for c in claims), wake) == (["later", "latest"], None)
    assert await fx.storage.next_wake_at(None) is None
    assert await fx.storage.claim_and_next_wake("w", 5, NOW, LEASE, []) == ([], None)


async def test_expire_leases_by_owner_prefix(fx: Fixture) -> None:
    await fx.create("a", "b")
    await fx.claim("host1:1:x", limit=1)
    await fx.claim("host2:2:y", limit=1)
    assert await fx.storage.expire_leases("host1:", NOW + 1) == 1
    again = await fx.claim("w3", now=NOW + 1)
    assert len(again) == 1
    assert await fx.storage.expire_leases(None, NOW + 2) == 2
    assert len(await fx.claim("w4", now=NOW + 2)) == 2


# --- operator transitions --------------------------------------------------------------------


async def test_transition_compares_and_sets(fx: Fixture) -> None:
    await fx.create("i")
    pk = (await fx.get("i")).pk
    with pytest.raises(Conflict):
        await fx.storage.transition_instance(
            pk, "running", Transition("paused", events=[NewEvent("workflow_paused", NOW)]), NOW
        )
    assert (await fx.get("i")).status == "queued"
    assert await fx.event_types("i") == ["workflow_queued"]
    with pytest.raises(Conflict):
        await fx.storage.transition_instance(10**12, "queued", Transition("paused"), NOW)
    await fx.storage.transition_instance(
        pk, "queued", Transition("paused", paused_at=NOW + 1, control="x"), NOW + 1
    )
    record = await fx.get("i")
    assert (record.status, record.paused_at, record.control) == ("paused", NOW + 1, "x")
    assert await fx.claim(now=NOW + 10**9) == []
    await fx.storage.transition_instance(
        pk, "paused", Transition("queued", runnable=True, priority=0, clear_paused_at=True), NOW + 2
    )
    record = await fx.get("i")
    assert (record.status, record.paused_at, record.control) == ("queued", None, None)
    assert [c.instance.id for c in await fx.claim(now=NOW + 2)] == ["i"]


async def test_restart_resets_history_streams_and_outcome(fx: Fixture) -> None:
    await fx.create("i")
    claim = await fx.claim_one("i")
    pk = claim.instance.pk
    await fx.storage.record_progress(
        claim, [NewEvent("step_completed", NOW, b"1", "do", f"s-{n}") for n in range(3)]
    )
    await fx.storage.record_stream_chunk(claim, "s-1", 0, b"a")
    await fx.storage.record_stream_chunk(claim, "s-2", 0, b"b")
    await fx.storage.deliver_event(pk, "go", b"1", NOW)
    await fx.storage.release_instance(claim, Release("errored", error=b'"e"'), NOW + 1)
    events = await fx.storage.load_events(pk)
    drop = [e.event_id for e in events if e.step_name in ("s-1", "s-2")]
    await fx.storage.transition_instance(
        pk,
        "errored",
        Transition(
            "queued",
            runnable=True,
            release_worker=True,
            reset_history=drop,
            reset_streams=["s-2"],
            clear_outcome=True,
            events=[NewEvent("workflow_queued", NOW + 2)],
        ),
        NOW + 2,
    )
    record = await fx.get("i")
    assert (record.status, record.error, record.ended_on, record.started_on) == (
        "queued",
        None,
        None,
        None,
    )
    left = await fx.storage.load_events(pk)
    assert [(e.type, e.step_name) for e in left] == [
        ("workflow_queued", None),
        ("step_completed", "s-0"),
        ("workflow_queued", None),
    ]
    assert [c async for c in fx.storage.read_stream(pk, "s-1", 1)] == [b"a"]
    with pytest.raises(RuntimeError):
        _ = [c async for c in fx.storage.read_stream(pk, "s-2", 1)]
    fresh = await fx.claim_one("i", now=NOW + 3)
    assert await fx.storage.consume_event(fresh, "go", NewEvent("wait_completed", NOW)) is None
    await fx.storage.transition_instance(
        pk,
        "running",
        Transition(
            "queued", runnable=True, release_worker=True, reset_history=True, reset_streams=True
        ),
        NOW + 4,
    )
    assert await fx.storage.load_events(pk) == []
    with pytest.raises(RuntimeError):
        _ = [c async for c in fx.storage.read_stream(pk, "s-1", 1)]
    with pytest.raises(Fenced):
        await fx.storage.record_progress(fresh, [])


async def test_delete_instances_fences_and_removes_data(fx: Fixture) -> None:
    await fx.create("a")
    await fx.create("b", now=NOW + 1)
    claim = await fx.claim_one("a")
    await fx.storage.deliver_event(claim.instance.pk, "go", b"1", NOW)
    deleted = await fx.storage.delete_instances(fx.workflow.pk, ["b", "a", "zzz", "a"])
    assert deleted == ["b", "a"]
    assert await fx.storage.count_instances(fx.workflow.pk) == {}
    assert await fx.storage.load_events(claim.instance.pk) == []
    with pytest.raises(Fenced):
        await fx.storage.record_progress(claim, [NewEvent("x", NOW)])
    assert await fx.storage.delete_instances(fx.workflow.pk, ["a"]) == []


# --- retention, settings, tokens -------------------------------------------------------------


async def test_retention_instance_then_version_then_account_then_default(
    storage: Storage,
) -> None:
    day = 86_400_000
    plain = await storage.register_workflow("acct", "plain", WorkflowDefinition("C", "m"), NOW)
    kept = await storage.register_workflow(
        "acct", "kept", WorkflowDefinition("C", "m", success_retention_ms=5 * day), NOW
    )
    await storage.put_account_settings("acct", 2 * day, 3 * day)
    assert await storage.get_account_settings("acct") == (2 * day, 3 * day)
    assert await storage.get_account_settings("none") == (None, None)
    await storage.create_instances(
        plain.pk,
        plain.version.id,
        [
            NewInstance("account", b"1"),
            NewInstance("own", b"1", success_retention_ms=day),
            NewInstance("failed", b"1"),
        ],
        NOW,
        skip_existing=False,
    )
    await storage.create_instances(
        kept.pk, kept.version.id, [NewInstance("version", b"1")], NOW, skip_existing=False
    )
    for claim in await storage.claim_runnable("w", 10, NOW, LEASE, None):
        status = "errored" if claim.instance.id == "failed" else "complete"
        await storage.release_instance(claim, Release(status, output=b"1"), NOW)
    await fx_running(storage, plain.pk, plain.version.id)

    async def alive() -> set[str]:
        found = set()
        for wf in (plain.pk, kept.pk):
            found |= {r.id for r in await storage.list_instances(wf, InstanceQuery(limit=100))}
        return found

    assert await storage.delete_expired(NOW + day - 1, 100) == 0
    assert await storage.delete_expired(NOW + day, 100) == 1
    assert await alive() == {"account", "failed", "version", "running"}
    assert await storage.delete_expired(NOW + 2 * day, 100) == 1
    assert await storage.delete_expired(NOW + 3 * day, 100) == 1
    assert await alive() == {"version", "running"}
    await storage.put_account_settings("acct", None, None)
    assert await storage.delete_expired(NOW + 5 * day, 100) == 1
    assert await alive() == {"running"}
    assert await storage.delete_expired(NOW + 10**12, 100) == 0


async def fx_running(storage: Storage, workflow_pk: int, version_id: str) -> None:
    await storage.create_instances(
        workflow_pk, version_id, [NewInstance("running", b"1")], NOW, skip_existing=False
    )
    await storage.claim_runnable("w", 1, NOW, LEASE, None)


async def test_delete_expired_default_retention_and_limit(fx: Fixture) -> None:
    await fx.create(*[f"i{n}" for n in range(5)])
    for claim in await fx.claim():
        await fx.storage.release_instance(claim, Release("complete", output=b"1"), NOW)
    week = DEFAULT_RETENTION_MS  # 7 days for a workflow registered now
    assert await fx.storage.delete_expired(NOW + week - 1, 10) == 0
    assert await fx.storage.delete_expired(NOW + week, 2) == 2
    assert await fx.storage.delete_expired(NOW + week, 10) == 3
    assert await fx.storage.count_instances(fx.workflow.pk) == {}


async def test_tokens(storage: Storage) -> None:
    a = TokenRecord("t1", "ci", ("workflows:read",), None, NOW, None)
    b = TokenRecord("t2", "ops", ("workflows:read", "workflows:write"), ("acct",), NOW + 1, None)
    await storage.create_token(a, "hash-a")
    await storage.create_token(b, "hash-b")
    assert await storage.find_token("hash-a") == a
    assert await storage.find_token("nope") is None
    assert await storage.list_tokens() == [a, b]
    assert await storage.revoke_token("t1", NOW + 5) is True
    assert await storage.revoke_token("t1", NOW + 6) is False
    assert await storage.revoke_token("missing", NOW) is False
    assert await storage.find_token("hash-a") is None
    listed = await storage.list_tokens()
    assert listed[0].revoked_on == NOW + 5 and listed[1] == b
