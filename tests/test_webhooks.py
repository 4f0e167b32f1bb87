"""Lifecycle webhooks (extension): outbox written with the transition, signed, retried."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from stepstone import Engine, NonRetryableError, WorkerSettings, WorkflowEntrypoint
from stepstone.errors import InvalidRequest
from stepstone.model.webhooks import DELIVERED, FAILED, PENDING, SOURCE_API
from stepstone.webhooks.config import parse_hook
from stepstone.webhooks.delivery import WebhookDispatcher, backoff_ms
from stepstone.webhooks.signing import HEADER, sign, verify
from tests.engine.conftest import wait_for

SECRET = "s3cret-s3cret-s3cret"


class Fails(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        async def boom() -> None:
            raise NonRetryableError("card declined")

        await step.do("charge", boom)


class Waits(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        return await step.wait_for_event("approve", "approval", timeout="1 hour")


@dataclass
class Receiver:
    """A real HTTP server on a free port: records each request, answers ``codes`` in turn."""

    codes: list[int] = field(default_factory=list)
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.got.append((headers, body))
        self.arrived.set()
        code = self.codes.pop(0) if self.codes else 200
        writer.write(
            f"HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    await found.start()
    yield found
    await found.stop()


@pytest.fixture
async def engine(backend_url: str) -> AsyncIterator[Engine]:
    eng = await Engine.open(
        backend_url, worker_settings=WorkerSettings(concurrency=5, poll_ms=25, lease_ms=5_000)
    )
    await eng.register("fails", Fails)
    await eng.register("waits", Waits)
    try:
        yield eng
    finally:
        await eng.close()


async def _hook(engine: Engine, workflow: str, url: str, **extra: Any) -> None:
    record = await engine.ops.workflow("default", workflow)
    entry = {"url": url, "events": ["errored", "complete", "terminated"], "secret": SECRET}
    hook = parse_hook({**entry, **extra}, where="test", default_id=f"h-{workflow}")
    await engine.storage.put_webhooks(record.pk, [hook], replace_source=None)


async def _deliveries(engine: Engine, workflow: str) -> list[Any]:
    record = await engine.ops.workflow("default", workflow)
    return await engine.storage.list_deliveries(record.pk, None, None, 50)


def _dispatcher(engine: Engine, **kw: Any) -> WebhookDispatcher:
    kw.setdefault("base_delay_ms", 0)
    return WebhookDispatcher(engine.storage, **kw)


async def test_an_errored_instance_is_announced_signed(engine: Engine, receiver: Receiver) -> None:
    await _hook(engine, "fails", receiver.url)
    handle = await engine.workflow("fails").create(id="e1")
    await wait_for(handle, "errored")
    # The outbox row exists as soon as the status does: nothing has been sent yet.
    [pending] = await _deliveries(engine, "fails")
    assert (pending.state, pending.event, pending.attempts) == (PENDING, "errored", 0)
    assert await _dispatcher(engine).tick() == 1
    [(headers, body)] = receiver.got
    assert verify(SECRET, headers[HEADER.lower()], body, int(time.time()))
    assert not verify("another-secret-entirely", headers[HEADER.lower()], body, int(time.time()))
    assert headers["stepstone-event"] == "errored"
    payload = orjson.loads(body)
    assert payload["workflow"] == "fails" and payload["instance"] == "e1"
    assert payload["status"] == "errored"
    assert payload["error"]["message"] == "card declined"
    assert payload["time"].endswith("Z")
    assert headers["stepstone-delivery"] == payload["id"]
    [done] = await _deliveries(engine, "fails")
    assert (done.state, done.attempts, done.log[0].status_code) == (DELIVERED, 1, 200)


async def test_a_stale_or_forged_signature_is_refused() -> None:
    body = b'{"x": 1}'
    header = sign(SECRET, body, 1_000)
    assert verify(SECRET, header, body, 1_100)
    assert not verify(SECRET, header, body, 1_000 + 301)  # replayed later
    assert not verify(SECRET, header, b'{"x": 2}', 1_000)
    assert not verify(SECRET, "t=abc,v1=00", body, 1_000)


async def test_failures_are_retried_with_backoff_and_logged(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.codes = [500, 503]
    await _hook(engine, "fails", receiver.url)
    await wait_for(await engine.workflow("fails").create(id="e2"), "errored")
    dispatcher = _dispatcher(engine)
    for _ in range(3):
        await dispatcher.tick()
    [done] = await _deliveries(engine, "fails")
    assert done.state == DELIVERED
    assert [a.status_code for a in done.log] == [500, 503, 200]
    assert [a.error for a in done.log] == ["HTTP 500", "HTTP 503", None]
    assert [backoff_ms(n, 1_000) for n in (1, 2, 3, 30)] == [1_000, 2_000, 4_000, 3_600_000]


async def test_an_unreachable_receiver_fails_then_a_resend_delivers(
    engine: Engine, receiver: Receiver
) -> None:
    port = receiver.port
    await receiver.stop()
    await _hook(engine, "fails", f"http://127.0.0.1:{port}/hook")
    await wait_for(await engine.workflow("fails").create(id="e3"), "errored")
    dispatcher = _dispatcher(engine, max_attempts=2)
    await dispatcher.tick()
    await dispatcher.tick()
    assert await dispatcher.tick() == 0  # given up
    [failed] = await _deliveries(engine, "fails")
    assert failed.state == FAILED and failed.attempts == 2
    assert all(a.status_code is None and a.error for a in failed.log)
    await receiver.start(port)
    workflow = await engine.ops.workflow("default", "fails")
    assert await engine.storage.resend_delivery(workflow.pk, failed.pk, engine.ops.now())
    assert not await engine.storage.resend_delivery(workflow.pk, failed.pk + 999, 0)
    await dispatcher.tick()
    [done] = await _deliveries(engine, "fails")
    assert done.state == DELIVERED and len(receiver.got) == 1


async def test_two_senders_never_send_the_same_row_at_once(
    engine: Engine, receiver: Receiver
) -> None:
    await _hook(engine, "fails", receiver.url)
    # A first tick on a sole-worker store drops leases left by a dead process: take it now.
    one, two = _dispatcher(engine), _dispatcher(engine)
    assert await one.tick() == await two.tick() == 0
    for i in range(6):
        await wait_for(await engine.workflow("fails").create(id=f"c{i}"), "errored")
    sent = await asyncio.gather(one.tick(), two.tick())
    assert sum(sent) == 6
    assert sorted(orjson.loads(b)["instance"] for _, b in receiver.got) == [
        f"c{i}" for i in range(6)
    ]


async def test_terminate_and_only_chosen_events(engine: Engine, receiver: Receiver) -> None:
    await _hook(engine, "waits", receiver.url, events=["terminated"])
    handle = await engine.workflow("waits").create(id="t1")
    await wait_for(handle, "waiting")
    await handle.terminate()
    await _dispatcher(engine).tick()
    assert [orjson.loads(b)["status"] for _, b in receiver.got] == ["terminated"]


async def test_a_long_wait_for_an_event_is_announced_once(
    engine: Engine, receiver: Receiver
) -> None:
    await _hook(engine, "waits", receiver.url, events=["waitingForEvent"], waitForEventLongerThan=1)
    handle = await engine.workflow("waits").create(id="w1")
    await wait_for(handle, "waiting")
    await asyncio.sleep(0.01)  # past the 1 ms threshold
    dispatcher = _dispatcher(engine)
    await dispatcher.tick()
    await dispatcher.tick()
    assert [orjson.loads(b)["event"] for _, b in receiver.got] == ["waitingForEvent"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"url": "ftp://x", "events": ["errored"]}, "http"),
        ({"url": "http://x", "events": []}, "non-empty"),
        ({"url": "http://x", "events": ["exploded"]}, "unknown event"),
        ({"url": "http://x", "events": ["errored"], "secret": "short"}, "16 characters"),
        ({"url": "http://[", "events": ["errored"]}, "http"),
        ({"url": "http://x", "events": ["errored"], "waitForEventLongerThan": "soon"}, "duration"),
        ({"url": "http://x", "events": ["errored"], "colour": 1}, "unknown key"),
        ({"url": "http://x", "events": ["errored"], "secretEnv": "NOPE_NOT_SET"}, "not set"),
    ],
)
def test_bad_hooks_say_what_is_wrong(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_hook(entry, where="hooks[0]", env={})


def test_a_hook_without_a_secret_gets_one() -> None:
    hook = parse_hook({"url": "https://x.example/h", "events": ["errored"]}, where="h")
    assert hook.secret.startswith("whsec_") and hook.source == SOURCE_API


def test_a_wait_threshold_defaults_to_an_hour_and_only_counts_for_waits() -> None:
    waits = parse_hook({"url": "http://x", "events": ["waitingForEvent"]}, where="h")
    assert waits.wait_threshold_ms == 3_600_000
    other = {"url": "http://x", "events": ["errored"], "waitForEventLongerThan": "5 minutes"}
    assert parse_hook(other, where="h").wait_threshold_ms is None


PROJECT = """
[[workflows]]
name = "fails"
class_name = "Fails"
script_name = "tests.test_webhooks"
webhooks = [{{ url = "{url}", events = ["errored"], secretEnv = "N2_HOOK_SECRET" }}]
"""


async def test_hooks_from_the_project_config_are_kept_in_step_with_it(
    tmp_path: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stepstone.project import load_project

    monkeypatch.setenv("N2_HOOK_SECRET", SECRET)
    config = tmp_path / "stepstone.toml"
    config.write_text(PROJECT.format(url=receiver.url))
    db = f"sqlite:///{tmp_path / 'p.db'}"
    engine = await Engine.open(db, config=config)
    try:
        workflow = await engine.ops.workflow("default", "fails")
        [hook] = await engine.storage.list_webhooks(workflow.pk)
        assert (hook.source, hook.url, hook.secret) == ("config", receiver.url, SECRET)
        await wait_for(await engine.workflow("fails").create(id="p1"), "errored")
        await _dispatcher(engine).tick()
        [(headers, body)] = receiver.got
        assert verify(SECRET, headers[HEADER.lower()], body, int(time.time()))
    finally:
        await engine.close()
    # The same config again keeps the hook (and its deliveries); without the key it goes.
    config.write_text(PROJECT.format(url=receiver.url).replace("webhooks = [", "# ["))
    engine = await Engine.open(db, config=load_project(config))
    try:
        assert await engine.storage.list_webhooks(workflow.pk) == []
    finally:
        await engine.close()


def test_a_bad_hook_in_the_config_names_its_place(tmp_path: Any) -> None:
    from stepstone.project import ProjectConfigError, load_project

    config = tmp_path / "stepstone.toml"
    config.write_text(PROJECT.format(url="ftp://x"))
    with pytest.raises(ProjectConfigError, match=r"workflows\[0\]: webhooks\[0\]: url must be"):
        load_project(config)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "entry.py").write_text("")
    wrangler = tmp_path / "wrangler.jsonc"
    wrangler.write_text(
        '{"name": "w", "main": "src/entry.py", "compatibility_flags": ["python_workers"],'
        ' "workflows": [{"name": "a", "binding": "A", "class_name": "A",'
        ' "webhooks": [{"url": "http://x", "events": ["nope"]}]}]}'
    )
    with pytest.raises(ProjectConfigError, match=r"webhooks: webhooks\[0\]: unknown event"):
        load_project(wrangler)
