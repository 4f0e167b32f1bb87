"""The audit log: every operator action recorded with who, what, where and how it ended;
read with filters and cursor paging; trimmed only by its own retention."""

from __future__ import annotations

import orjson
import pytest

from stepstone.audit import DEFAULT_AUDIT_RETENTION_MS, AuditSweeper
from stepstone.engine.clock import ManualClock
from stepstone.errors import CannotTerminate, InstanceNotFound
from stepstone.model.actors import Actor
from stepstone.model.ops_records import AuditQuery
from stepstone.ops import CreateRequest, Operations
from stepstone.storage.base import Storage

T0 = 1_790_000_000_000
BOB = Actor("token", "bob", "tok-bob")


async def setup(storage: Storage, count: int = 3) -> tuple[Operations, ManualClock]:
    clock = ManualClock(T0)
    ops = Operations(storage, clock=clock, check_importable=False)
    await ops.put_workflow("acct", "orders", class_name="Orders", script_name="orders")
    requests = [CreateRequest(id=f"o-{n}") for n in range(count)]
    await ops.create_instances("acct", "orders", requests, skip_existing=False)
    return ops, clock


def detail(entry: object) -> dict[str, object]:
    raw = getattr(entry, "detail", None)
    return dict(orjson.loads(raw)) if raw else {}


async def test_every_action_is_recorded_with_its_outcome(storage: Storage) -> None:
    ops, clock = await setup(storage)
    where = ("acct", "orders")
    await ops.pause(*where, "o-0", actor=BOB)
    clock.advance(1)
    await ops.resume(*where, "o-0", actor=BOB)
    clock.advance(1)
    await ops.send_event(*where, "o-0", "approval", b'{"secret": "x"}', actor=BOB)
    clock.advance(1)
    await ops.terminate(*where, "o-0", actor=BOB)
    clock.advance(1)
    with pytest.raises(CannotTerminate):
        await ops.terminate(*where, "o-0", actor=BOB)
    clock.advance(1)
    await ops.restart(*where, "o-0", actor=BOB)
    clock.advance(1)
    with pytest.raises(InstanceNotFound):
        await ops.pause(*where, "missing", actor=BOB)
    clock.advance(1)
    await ops.delete_instances(*where, ["o-1", "gone"], actor=BOB)
    clock.advance(1)
    await ops.pause(*where, "o-2")  # a binding or embedded call: no token

    log = await storage.list_audit(AuditQuery("acct", limit=100))
    summary = [(e.action, e.instance_id, e.outcome, e.actor_name) for e in reversed(log)]
    assert summary == [
        ("pause", "o-0", "ok", "bob"),
        ("resume", "o-0", "ok", "bob"),
        ("send_event", "o-0", "ok", "bob"),
        ("terminate", "o-0", "ok", "bob"),
        ("terminate", "o-0", "error", "bob"),
        ("restart", "o-0", "ok", "bob"),
        ("pause", "missing", "error", "bob"),
        ("delete", "o-1", "ok", "bob"),
        ("delete", "gone", "error", "bob"),
        ("pause", "o-2", "ok", None),
    ]
    newest_first = list(log)
    assert newest_first[0].actor_kind == "embedded"
    assert {e.actor_id for e in newest_first[1:]} == {"tok-bob"}
    assert [e.at for e in reversed(log)] == sorted(e.at for e in log)
    by_action = {(e.action, e.outcome, e.instance_id): detail(e) for e in log}
    assert by_action[("terminate", "ok", "o-0")]["status"] == "terminated"
    refused = by_action[("terminate", "error", "o-0")]["error"]
    assert isinstance(refused, dict) and refused["code"] == CannotTerminate.code
    # The event's payload may be sensitive: its type and size are recorded, not its content.
    sent = by_action[("send_event", "ok", "o-0")]
    assert sent == {"type": "approval", "bytes": 15}


async def test_filters_and_cursor_paging(storage: Storage) -> None:
    ops, clock = await setup(storage, 30)
    for n in range(30):
        clock.advance(1000)
        await ops.pause("acct", "orders", f"o-{n}", actor=BOB if n % 3 else Actor("token", "amy"))
    seen: list[str] = []
    before = None
    while True:
        page = await storage.list_audit(AuditQuery("acct", before=before, limit=7))
        seen += [e.instance_id or "" for e in page]
        if len(page) < 7:
            break
        before = page[-1].seq
    assert seen == [f"o-{n}" for n in reversed(range(30))]
    window = await storage.list_audit(
        AuditQuery("acct", since=T0 + 5_000, until=T0 + 8_000, limit=50)
    )
    assert [e.instance_id for e in window] == ["o-6", "o-5", "o-4"]
    amy = await storage.list_audit(AuditQuery("acct", actor="amy", limit=50))
    assert len(amy) == 10
    assert await storage.list_audit(AuditQuery("other-account")) == []
    one = await storage.list_audit(AuditQuery("acct", workflow_name="orders", instance_id="o-7"))
    assert [(e.action, e.actor_name) for e in one] == [("pause", "bob")]


async def test_retention_trims_only_old_entries(storage: Storage) -> None:
    ops, clock = await setup(storage, 5)
    for n in range(3):
        await ops.pause("acct", "orders", f"o-{n}", actor=BOB)
    clock.advance(DEFAULT_AUDIT_RETENTION_MS - 10)
    for n in range(3, 5):
        await ops.pause("acct", "orders", f"o-{n}", actor=BOB)
    sweeper = AuditSweeper(storage, clock=clock)
    assert await sweeper.sweep() == 0
    clock.advance(11)
    assert await sweeper.sweep() == 3
    left = await storage.list_audit(AuditQuery("acct"))
    assert sorted(e.instance_id or "" for e in left) == ["o-3", "o-4"]


async def test_an_unencodable_detail_never_fails_the_action(storage: Storage) -> None:
    """A restart's ``from.count`` beyond 64 bits (a client may send one) is still recorded."""
    from stepstone.errors import CannotRestart
    from stepstone.ops import RestartFrom

    ops, _ = await setup(storage, 1)
    with pytest.raises(CannotRestart):
        await ops.restart("acct", "orders", "o-0", from_=RestartFrom("x", 2**70), actor=BOB)
    [entry] = await storage.list_audit(AuditQuery("acct"))
    assert entry.outcome == "error"
    assert detail(entry)["from"] == {"name": "x", "count": 2**70, "type": "do"}
