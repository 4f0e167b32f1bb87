"""A planned switchover: the primary stays up but is fenced, then the standby is promoted.

The fence is what an operator (or failover tooling) does to an old primary that must not take
writes any more: ``ALTER SYSTEM SET default_transaction_read_only = on`` and a reload, which
reaches sessions already open, then ending its client sessions (reads on them would go on
seeing the old primary's data once the standby is promoted). Between the two, Stepstone's
writes there fail with "read-only transaction" and must be retried on a new connection;
connections must keep looking (neither host takes writes for a moment) until the promoted
standby does. Nothing acknowledged is lost or run again, and every instance completes.
"""

from __future__ import annotations

import time

import pytest

from tests.api.conftest import LiveServer
from tests.ha.conftest import STEP_NAMES, Ledger, Workers, counts, create
from tests.ha.flows import STEPS
from tests.ha.pair import Pair, needs_clusters

pytestmark = [pytest.mark.slow, needs_clusters]

TOTAL = 500


def test_a_fenced_primary_hands_over_to_the_promoted_standby(
    pair: Pair, workers: Workers, live: LiveServer
) -> None:
    workers.start(2)
    pk = create(live, TOTAL)
    deadline = time.monotonic() + 60
    while len(Ledger.read(workers.effects).acks) < TOTAL:
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.05)

    fenced_ns = time.time_ns()
    pair.primary.sql("ALTER SYSTEM SET default_transaction_read_only = on")
    pair.primary.sql("SELECT pg_reload_conf()")
    time.sleep(1.0)  # writes meet the read-only server meanwhile
    pair.primary.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )
    # Neither host takes writes for a while: workers must keep trying, not fail.
    time.sleep(1.0)
    promote_ns = time.time_ns()
    pair.promote()

    deadline = time.monotonic() + 120
    while (found := counts(live, pk)).get("complete", 0) < TOTAL:
        assert not found.get("errored"), f"{found}\n{workers.logs()}"
        assert time.monotonic() < deadline, f"not complete: {found}\n{workers.logs()}"
        time.sleep(0.2)
    assert all(proc.poll() is None for proc in workers.procs), workers.logs()
    assert not workers.tracebacks(), workers.tracebacks()[:5]

    ledger = Ledger.read(workers.effects)
    expected = {(f"i{n:05d}", step) for n in range(TOTAL) for step in STEP_NAMES}
    assert set(ledger.acks) == expected
    again = ledger.ran_after_ack()
    assert not again, f"steps run again after their completion was acknowledged: {again[:10]}"
    new_primary = {
        tuple(line.split("|"))
        for line in pair.standby.sql(
            "SELECT i.id, e.step_name FROM instance_events e JOIN instances i"
            " ON i.pk = e.instance_pk WHERE e.type = 'step_completed'"
        ).splitlines()
    }
    lost = ledger.acked_before(fenced_ns) - new_primary
    assert not lost, f"acknowledged before the fence, missing: {sorted(lost)[:10]}"
    assert len(new_primary) == TOTAL * len(STEPS)
    first = ledger.first_ack_after(promote_ns)
    assert first is not None
    print(
        f"\nswitchover: {len(ledger.acked_before(fenced_ns))} steps acknowledged before the"
        f" fence, 0 lost; first step on the new primary {(first - promote_ns) / 1e9:.2f}s"
        " after the promotion began"
    )
