"""The synchronous standby dies, or the network between it and the primary fails (issue 19).

With ``synchronous_standby_names = 'FIRST 1 (standby1)'`` the primary may not acknowledge a
commit the standby has not flushed, so without the standby every commit waits. Stepstone must
say so rather than hang: the API answers 503 and ``/readyz`` is not ready. The primary keeps
going once the operator chooses to (``synchronous_standby_names = ''``: commits no longer wait,
at the price of what a failover meanwhile would lose) or once the link is back (the standby
catches up and the waiting commits are acknowledged). Either way nothing is lost or run twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.api.conftest import LiveServer
from tests.ha.conftest import WORKFLOW, Ledger, Workers, counts, create
from tests.ha.flows import STEPS
from tests.ha.pair import Pair, needs_clusters

pytestmark = [pytest.mark.slow, needs_clusters]

TOTAL = 300
UNAVAILABLE = {"code": 10007, "message": "workflows.api.error.storage_unavailable"}
# A write waits STALL_S (5 s) before the store calls it an outage, and the API then cuts a
# request that has waited its patience (3 s); slack for a loaded two-core machine.
ANSWER_BOUND_S = 15.0


def _wait(what: str, done: Callable[[], bool], timeout: float) -> float:
    began = time.monotonic()
    while not done():
        assert time.monotonic() - began < timeout, f"{what} not within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - began


def _blocked_then_released(
    pair: Pair,
    workers: Workers,
    live: LiveServer,
    block: Callable[[], None],
    release: Callable[[], None],
) -> tuple[float, float]:
    """Run instances, block commits, check the API's answers, release them; how long the 503
    took, and how long after the release steps completed again."""
    workers.start(2, lease_seconds=30)
    pk = create(live, TOTAL)
    _wait("some progress", lambda: len(Ledger.read(workers.effects).acks) >= 100, 60)
    headers = {"authorization": f"Bearer {live.token}"}
    instances = live.account_url(f"/workflows/{WORKFLOW}/instances")

    block()
    with httpx.Client(headers=headers, timeout=60) as client:
        began = time.monotonic()
        answer = client.post(instances, json={"instance_id": "during", "params": {"n": -1}})
        took = time.monotonic() - began
        assert answer.status_code == 503, answer.text
        assert answer.json()["errors"] == [UNAVAILABLE]
        assert int(answer.headers["retry-after"]) > 0
        assert took < ANSWER_BOUND_S, f"answered after {took:.1f}s"
        ready = client.get(f"{live.base}/readyz")
        assert ready.status_code == 503, ready.text
        assert client.get(f"{live.base}/healthz").status_code == 200
        # Nothing commits meanwhile: what the policy asks for.
        stalled_acks = len(Ledger.read(workers.effects).acked_before(time.time_ns()))
        time.sleep(1.0)
        assert len(Ledger.read(workers.effects).acks) == stalled_acks

        released_ns = time.time_ns()
        release()
        _wait("/readyz ready", lambda: client.get(f"{live.base}/readyz").status_code == 200, 30)
        _wait("all instances complete", lambda: counts(live, pk).get("complete", 0) >= TOTAL, 120)
        after = client.post(instances, json={"instance_id": "after", "params": {"n": -2}})
        assert after.status_code == 200, after.text

    ledger = Ledger.read(workers.effects)
    expected = {(f"i{n:05d}", f"{s}-1") for n in range(TOTAL) for s in STEPS}
    assert expected <= set(ledger.acks)
    again = ledger.ran_after_ack()
    assert not again, f"steps run again after their completion was acknowledged: {again[:10]}"
    assert not counts(live, pk).get("errored"), workers.logs()
    assert not workers.tracebacks(), workers.tracebacks()[:5]
    first = ledger.first_ack_after(released_ns)
    assert first is not None
    return took, (first - released_ns) / 1e9


def test_a_dead_standby_blocks_commits_until_the_operator_lets_them_go_on(
    pair: Pair, workers: Workers, live: LiveServer
) -> None:
    took, resumed = _blocked_then_released(
        pair, workers, live, block=pair.standby.kill, release=lambda: pair.set_policy("")
    )
    print(
        f"\nstandby killed (FIRST 1): the API answered 503 after {took:.1f}s; with"
        f" synchronous_standby_names = '' steps completed again {resumed:.2f}s later"
    )


def test_a_cut_link_blocks_commits_until_it_heals(
    pair: Pair, workers: Workers, live: LiveServer
) -> None:
    assert pair.link is not None
    link = pair.link
    took, resumed = _blocked_then_released(pair, workers, live, block=link.cut, release=link.heal)
    # Healed: the standby caught up and is the synchronous one again, with every instance.
    pair.wait_streaming()
    done = pair.standby.sql("SELECT count(*) FROM instances WHERE status = 'complete'")
    assert int(done) >= TOTAL
    print(
        f"\nlink cut (FIRST 1): the API answered 503 after {took:.1f}s; healed, steps"
        f" completed again {resumed:.2f}s later"
    )
