"""Wrong tokens are throttled per client address: a growing delay, then 429 + Retry-After; a
correct token, from anywhere else or before the lock, is never slowed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stepstone.web.common.throttle import Policy, Throttle, client_key, for_ops
from tests.api.conftest import ACCOUNT, LiveServer
from tests.dashboard.conftest import browser_client, csrf_of

WF = f"/accounts/{ACCOUNT}/workflows"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _throttle(**policy: Any) -> tuple[Throttle, FakeClock]:
    clock = FakeClock()
    return Throttle(Policy(**policy), clock=clock), clock


# --- the policy, on a fake clock --------------------------------------------------------------


def test_delay_grows_with_consecutive_failures_and_is_capped() -> None:
    throttle, _ = _throttle(free_failures=2, first_delay=0.5, max_delay=3.0, lock_after=100)
    delays = [throttle.failed("10.0.0.1") for _ in range(8)]
    assert delays == [0.0, 0.0, 0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_past_the_threshold_the_address_is_locked_until_retry_after() -> None:
    throttle, clock = _throttle(lock_after=3, lock_seconds=30.0)
    for _ in range(2):
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") is None
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 30
    clock.now += 29.5
    assert throttle.retry_after("10.0.0.1") == 1
    clock.now += 0.5
    assert throttle.retry_after("10.0.0.1") is None
    # One more failure after the lock locks again at once.
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 30


def test_a_correct_token_resets_its_address_only() -> None:
    throttle, _ = _throttle(free_failures=1, lock_after=100)
    for address in ("10.0.0.1", "10.0.0.2"):
        for _ in range(4):
            throttle.failed(address)
    throttle.succeeded("10.0.0.1")
    assert throttle.failures("10.0.0.1") == 0
    assert throttle.failures("10.0.0.2") == 4
    assert throttle.failed("10.0.0.1") == 0.0


def test_an_address_is_forgotten_after_a_quiet_spell() -> None:
    throttle, clock = _throttle(forget_after=600.0, lock_after=3, lock_seconds=60.0)
    for _ in range(3):
        throttle.failed("10.0.0.1")
    clock.now += 601
    assert throttle.failures("10.0.0.1") == 0
    assert throttle.retry_after("10.0.0.1") is None


def test_memory_is_bounded_least_recently_failing_first() -> None:
    throttle, _ = _throttle(max_clients=100)
    throttle.failed("10.0.0.0")
    for n in range(1, 1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100
    assert throttle.failures("10.0.0.0") == 0
    assert throttle.failures("10.0.3.231") == 1


def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("unknown") == "unknown"


def test_the_delay_is_an_awaited_sleep_not_a_blocked_thread() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    throttle = Throttle(Policy(free_failures=0, first_delay=0.25), sleep=sleep)
    asyncio.run(throttle.fail("10.0.0.1"))
    assert slept == [0.25]


# --- over real HTTP ---------------------------------------------------------------------------


def _client(live: LiveServer, token: str, source: str = "127.0.0.1") -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(
        base_url=live.v4,
        headers={"authorization": f"Bearer {token}"},
        transport=transport,
        timeout=30,
    )


@pytest.fixture
def throttled(server: LiveServer) -> Iterator[tuple[LiveServer, Throttle]]:
    throttle = for_ops(server.engine.ops)

    async def configure() -> None:
        throttle.policy = Policy(free_failures=2, first_delay=0.001, max_delay=0.002, lock_after=6)

    server.run(configure())
    yield server, throttle


def test_wrong_tokens_end_in_429_with_retry_after(throttled: tuple[LiveServer, Throttle]) -> None:
    live, _ = throttled
    with _client(live, "wrong-token") as guesser:
        statuses = [guesser.get(WF).status_code for _ in range(20)]
        assert statuses == [401] * 6 + [429] * 14
        locked = guesser.get(WF)
        body = locked.json()
        assert body["success"] is False and body["errors"][0]["code"] == 10009
        assert body["errors"][0]["message"] == "workflows.api.error.too_many_requests"
        assert 1 <= int(locked.headers["retry-after"]) <= 60
    # While locked, the address is refused before its token is looked at, so a right guess
    # cannot be told from a wrong one.
    with _client(live, live.token) as same_address:
        assert same_address.get(WF).status_code == 429
    with _client(live, live.token, source="127.0.0.2") as elsewhere:
        assert elsewhere.get(WF).status_code == 200


def test_a_correct_token_resets_the_count(throttled: tuple[LiveServer, Throttle]) -> None:
    live, throttle = throttled
    with _client(live, "wrong-token") as guesser, _client(live, live.token) as right:
        for _ in range(5):
            assert guesser.get(WF).status_code == 401
        assert right.get(WF).status_code == 200
        assert live.run(_failures(throttle, "127.0.0.1")) == 0
        for _ in range(5):
            assert guesser.get(WF).status_code == 401


def test_missing_credentials_are_not_guesses(throttled: tuple[LiveServer, Throttle]) -> None:
    live, throttle = throttled
    with live.http(token=None) as anonymous:
        for _ in range(10):
            assert anonymous.get(WF).status_code == 401
    assert live.run(_failures(throttle, "127.0.0.1")) == 0


def test_a_held_back_failure_does_not_slow_a_correct_token_elsewhere(
    throttled: tuple[LiveServer, Throttle],
) -> None:
    live, throttle = throttled
    release = threading.Event()
    held = threading.Event()

    async def install() -> None:
        async def sleep(seconds: float) -> None:
            held.set()
            while not release.is_set():
                await asyncio.sleep(0.005)

        throttle.sleep = sleep
        for _ in range(3):
            throttle.failed("127.0.0.1")

    live.run(install())
    outcome: list[int] = []

    def guess() -> None:
        with _client(live, "wrong-token") as guesser:
            outcome.append(guesser.get(WF).status_code)

    guesser = threading.Thread(target=guess)
    guesser.start()
    try:
        assert held.wait(10), "the wrong token's answer was never held back"
        with _client(live, live.token, source="127.0.0.2") as elsewhere:
            for _ in range(5):
                assert elsewhere.get(WF).status_code == 200
        assert outcome == [], "the held failure was answered before the release"
    finally:
        release.set()
        guesser.join(10)
    assert outcome == [401]


def test_dashboard_sign_in_shares_the_count(throttled: tuple[LiveServer, Throttle]) -> None:
    live, _ = throttled
    with browser_client(live) as browser:
        for expected in [401] * 6 + [429]:
            form = browser.get("/dashboard/login")
            answer = browser.post(
                "/dashboard/login",
                data={"token": "wrong", "csrf": csrf_of(form.text), "next": "/dashboard/"},
            )
            assert answer.status_code == expected, answer.text
        assert "Too many wrong tokens" in answer.text
        assert int(answer.headers["retry-after"]) >= 1
    with _client(live, live.token) as api:
        assert api.get(WF).status_code == 429


async def _failures(throttle: Throttle, address: str) -> int:
    return throttle.failures(address)
