"""Approval links over real HTTP (a Stepstone extension): signed, expiring, single-use pages
that send an event without an API token; replays and tampering are refused and audited."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from stepstone import WorkflowEntrypoint
from stepstone.engine import approvals
from stepstone.model.ops_records import AuditQuery
from tests.api.conftest import ACCOUNT, LiveServer

SCRIPT = "tests.api.test_approval_links"


class Approvable(WorkflowEntrypoint):
    async def run(self, event: Any, step: Any) -> Any:
        url = await step.approval_link("ask", "approval", "1 hour", title="Ship <release> 1.2?")
        answer = await step.wait_for_event("answer", "approval", timeout="1 hour")
        return {"url": url, "answer": answer["payload"]}


@pytest.fixture
def live(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> LiveServer:
    # Behind a proxy the URL people reach differs from the bind address: configured here.
    monkeypatch.setenv(approvals.PUBLIC_URL_ENV, server.base + "/")
    with server.http() as client:
        answer = client.put(
            f"/accounts/{ACCOUNT}/workflows/approvable",
            json={"class_name": "Approvable", "script_name": SCRIPT},
        )
        assert answer.status_code == 200, answer.text
    return server


def _start(live: LiveServer, instance_id: str) -> str:
    with live.http() as client:
        answer = client.post(
            f"/accounts/{ACCOUNT}/workflows/approvable/instances", json={"instance_id": instance_id}
        )
        assert answer.status_code == 200, answer.text
    live.wait_status("approvable", instance_id, {"waiting"})

    async def url() -> str:
        _, record = await live.engine.ops.instance(ACCOUNT, "approvable", instance_id)
        step = (await live.engine.ops.history(record)).steps[("do", "ask-1")]
        return str(orjson.loads(step.output or b""))

    return live.run(url())


def _output(live: LiveServer, instance_id: str) -> Any:
    # The API shows an object output as its JSON text, as Cloudflare does.
    return orjson.loads(live.wait_done("approvable", instance_id)["output"])


def _audit(live: LiveServer, instance_id: str | None = None) -> list[dict[str, Any]]:
    query = AuditQuery(ACCOUNT, instance_id=instance_id, actions=(approvals.AUDIT_ACTION,))
    entries = live.run(live.engine.storage.list_audit(query))
    return [{"outcome": e.outcome, **orjson.loads(e.detail or b"{}")} for e in entries]


def test_the_page_shows_what_is_approved_without_a_token(live: LiveServer) -> None:
    url = _start(live, "a1")
    assert url.startswith(live.base + approvals.PREFIX)
    page = httpx.get(url)
    assert page.status_code == 200
    assert "Ship &lt;release&gt; 1.2?" in page.text and "<release>" not in page.text
    assert "approvable" in page.text and "a1" in page.text and "approval" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    # Looking is not using: the link still works.
    assert httpx.get(url).status_code == 200


def test_approving_sends_the_event_once_and_a_replay_is_refused_and_audited(
    live: LiveServer,
) -> None:
    url = _start(live, "a2")
    done = httpx.post(url, data={"decision": "approve", "comment": "looks good"})
    assert done.status_code == 200 and "approved" in done.text
    result = _output(live, "a2")
    answer = result["answer"]
    assert answer["approved"] is True and answer["decision"] == "approve"
    assert answer["comment"] == "looks good" and isinstance(answer["link"], str)
    # The workflow replayed after the event: the link is a recorded step, the same URL.
    assert result["url"] == url
    again = httpx.post(url, data={"decision": "reject"})
    assert again.status_code == 410 and "used already" in again.text
    assert httpx.get(url).status_code == 410
    outcomes = [(e["outcome"], e.get("refused"), e.get("decision")) for e in _audit(live, "a2")]
    assert sorted(outcomes, key=str) == sorted(
        [("ok", None, "approve"), ("error", "used", None), ("error", "used", None)], key=str
    )


def test_rejecting_sends_approved_false(live: LiveServer) -> None:
    url = _start(live, "a3")
    assert httpx.post(url, data={"decision": "reject"}).status_code == 200
    answer = _output(live, "a3")["answer"]
    assert answer == {
        "approved": False,
        "decision": "reject",
        "comment": None,
        "link": answer["link"],
    }


def test_two_submissions_at_once_send_one_event(live: LiveServer) -> None:
    url = _start(live, "a4")
    with ThreadPoolExecutor(4) as pool:
        codes = sorted(
            pool.map(lambda _: httpx.post(url, data={"decision": "approve"}).status_code, range(4))
        )
    assert codes == [200, 410, 410, 410]


def _retoken(url: str, **changes: Any) -> str:
    base, token = url.split(approvals.PREFIX)
    body, signature = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return f"{base}{approvals.PREFIX}{forged}.{signature}"


def test_tampered_links_are_refused_and_audited(live: LiveServer) -> None:
    url = _start(live, "a5")
    other_type = _retoken(url, t="something-else")
    later = _retoken(url, e=4_000_000_000_000)
    bad_signature = url[:-4] + ("AAAA" if not url.endswith("AAAA") else "BBBB")
    for forged in (other_type, later, bad_signature):
        assert httpx.post(forged, data={"decision": "approve"}).status_code == 403
        assert httpx.get(forged).status_code == 403
    assert httpx.get(live.base + approvals.PREFIX + "garbage").status_code == 403
    refused = [e.get("refused") for e in _audit(live, "a5")]
    assert refused == ["tampered"] * 6
    # The real link still works: forgeries never used it up.
    assert httpx.post(url, data={"decision": "approve"}).status_code == 200


def test_an_expired_link_is_refused(live: LiveServer) -> None:
    _start(live, "a6")

    async def expired() -> str:
        _, record = await live.engine.ops.instance(ACCOUNT, "approvable", "a6")
        now = live.engine.ops.now()
        return await approvals.create_link(
            live.engine.storage,
            instance_pk=record.pk,
            event_type="approval",
            expires_ms=60_000,
            title=None,
            now=now - 120_000,
        )

    url = live.run(expired())
    answer = httpx.post(url, data={"decision": "approve"})
    assert answer.status_code == 410 and "expired" in answer.text
    assert [e.get("refused") for e in _audit(live, "a6")] == ["expired"]


def test_bad_input_is_a_clear_error_and_leaves_the_link_usable(live: LiveServer) -> None:
    url = _start(live, "a7")
    bad = httpx.post(url, data={"decision": "maybe"})
    assert bad.status_code == 400 and "approve or reject" in bad.text
    long = httpx.post(url, data={"decision": "approve", "comment": "x" * 3000})
    assert long.status_code == 400 and "at most" in long.text
    assert httpx.put(url).status_code == 405
    assert httpx.post(url, data={"decision": "approve"}).status_code == 200


def test_a_link_to_an_ended_instance_is_refused(live: LiveServer) -> None:
    url = _start(live, "a8")
    with live.http() as client:
        answer = client.patch(
            f"/accounts/{ACCOUNT}/workflows/approvable/instances/a8/status",
            json={"status": "terminate"},
        )
        assert answer.status_code == 200, answer.text
    live.wait_done("approvable", "a8")
    answer = httpx.post(url, data={"decision": "approve"})
    assert answer.status_code == 410 and "cannot take it" in answer.text


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stepstone", "instances", "approval-link", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != approvals.PUBLIC_URL_ENV},
    )


def test_an_operator_link_from_the_cli_sends_the_event(live: LiveServer) -> None:
    _start(live, "a9")
    db = live.db_url
    made = _cli(
        "approvable",
        "a9",
        "--db",
        db,
        "--type",
        "approval",
        "--expires",
        "1h",
        "--title",
        "Refund order 42?",
        "--public-url",
        live.base,
    )
    assert made.returncode == 0, made.stderr
    url = made.stdout.strip()
    assert url.startswith(live.base + approvals.PREFIX)
    page = httpx.get(url)
    assert page.status_code == 200 and "Refund order 42?" in page.text
    assert httpx.post(url, data={"decision": "approve"}).status_code == 200
    assert _output(live, "a9")["answer"]["approved"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--type", "bad.type"], "'.' is not supported"),
        (["--type", "approval", "--expires", "soon"], "--expires"),
        (["--type", "approval", "--expires", "400 days"], "1 second to 365 days"),
        (["--type", "approval", "--public-url", "ftp://x"], "http://"),
    ],
)
def test_the_cli_refuses_bad_options_saying_which(
    tmp_path: Path, args: list[str], message: str
) -> None:
    made = _cli("approvable", "x", "--db", f"sqlite:///{tmp_path / 'none.db'}", *args)
    assert made.returncode != 0 and message in made.stderr, made.stderr


def test_the_cli_names_a_missing_instance(live: LiveServer) -> None:
    db = live.db_url
    made = _cli("approvable", "nope", "--db", db, "--type", "approval")
    assert made.returncode == 1 and "no instance 'nope'" in made.stderr


async def test_links_are_single_use_and_signed_alike_on_every_backend(backend_url: str) -> None:
    from stepstone import Engine

    engine = await Engine.open(backend_url, run_worker=False)
    try:
        await engine.register("approvable", Approvable)
        handle = await engine.workflow("approvable").create(id="b1")
        _, record = await engine.ops.instance("default", "approvable", handle.id)
        storage, now = engine.storage, engine.ops.now()
        key = await storage.signing_key(approvals.KEY_NAME, b"first")
        assert await storage.signing_key(approvals.KEY_NAME, b"second") == key
        url = await approvals.create_link(
            storage,
            instance_pk=record.pk,
            event_type="approval",
            expires_ms=60_000,
            title="t",
            now=now,
            base_url="https://approve.example.com/base",
        )
        assert url.startswith("https://approve.example.com/base" + approvals.PREFIX)
        token = url.split(approvals.PREFIX)[1]
        link = await approvals.open_link(storage, token, now)
        assert (link.workflow, link.instance_id, link.account_id) == ("approvable", "b1", "default")
        assert (await approvals.submit(storage, engine.ops, token, "approve", None, now)).id
        with pytest.raises(approvals.Refused) as refused:
            await approvals.submit(storage, engine.ops, token, "approve", None, now)
        assert refused.value.reason == "used"
        assert not await storage.use_approval_link(link.id, now)
    finally:
        await engine.close()
