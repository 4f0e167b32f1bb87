"""Raw HTTP: the step endpoint's octet-stream, redaction and attempts, and the endpoints the
SDK does not cover (batch delete/terminate, terminate-all, settings, accounts, health)."""

from __future__ import annotations

import re
import time

from stepstone.model.retention import DEFAULT_RETENTION_MS
from tests.api.conftest import ACCOUNT, LiveServer

WF = f"/accounts/{ACCOUNT}/workflows"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _create(server: LiveServer, workflow: str, class_name: str, *ids: str) -> None:
    server.register(workflow, class_name)
    with server.http() as http:
        for instance_id in ids:
            answer = http.post(f"{WF}/{workflow}/instances", json={"instance_id": instance_id})
            assert answer.status_code == 200, answer.text


def test_step_endpoint_streams_redacts_and_selects_attempts(server: LiveServer) -> None:
    _create(server, "tour", "Tour", "t1")
    server.wait_step("tour", "t1", "approval-1")
    step = f"{WF}/tour/instances/t1/step"
    with server.http() as http:
        with http.stream("GET", step, params={"name": "blob-1", "type": "step"}) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"] == "application/octet-stream"
            assert answer.headers["content-length"] == "256000"
            chunks = list(answer.iter_bytes())
        assert b"".join(chunks) == bytes(range(256)) * 1000

        secret = http.get(step, params={"name": "secret-1", "type": "step"}).json()
        assert secret["result"] == {"status": "complete", "error": None, "output": "[REDACTED]"}
        details = http.get(f"{WF}/tour/instances/t1").json()["result"]
        by_name = {s["name"]: s for s in details["steps"]}
        assert by_name["secret-1"]["output"] == "[REDACTED]"
        assert by_name["secret-1"]["config"]["sensitive"] == "output"
        assert "hunter2" not in str(details)

        # The preview in details is truncated; /step has the whole value.
        assert len(by_name["flaky-1"]["output"]) == 1024
        full = http.get(step, params={"name": "flaky-1", "type": "step"}).json()["result"]
        assert full["output"]["text"] == "x" * 2000

        first = http.get(step, params={"name": "flaky-1", "type": "step", "attempt": 1}).json()
        assert first["result"]["status"] == "errored"
        assert first["result"]["error"] == {"name": "ValueError", "message": "first attempt fails"}
        second = http.get(step, params={"name": "flaky-1", "type": "step", "attempt": 2}).json()
        assert second["result"]["status"] == "complete"
        assert second["result"]["output"]["attempt"] == 2
        third = http.get(step, params={"name": "flaky-1", "type": "step", "attempt": 3})
        assert third.status_code == 404 and third.json()["errors"][0]["code"] == 10402

        # do and waitForEvent have separate namespaces: the type picks one.
        wrong_kind = http.get(step, params={"name": "approval-1", "type": "step"})
        assert wrong_kind.status_code == 404
        # The explanation names the kind the name has, and the type to ask with.
        hint = wrong_kind.json()["messages"][0]["message"]
        assert "'approval-1' is a waitForEvent: ask with type=waitForEvent" in hint
        waiting = http.get(step, params={"name": "approval-1", "type": "waitForEvent"}).json()
        assert waiting["result"] == {
            "status": "waiting",
            "error": None,
            "output": None,
            "event_type": "approve",
        }

        for attempt in details["steps"][0]["attempts"]:
            assert ISO_MS.match(attempt["start"]) and ISO_MS.match(attempt["end"])
        assert ISO_MS.match(details["queued"]) and details["success"] is None


def test_step_running_between_retries(server: LiveServer) -> None:
    _create(server, "retrying", "Retrying", "r1")
    server.wait_status("retrying", "r1", {"waiting"})
    with server.http() as http:
        answer = http.get(
            f"{WF}/retrying/instances/r1/step", params={"name": "call-1", "type": "step"}
        ).json()
        assert answer["result"] == {
            "status": "running",
            "error": {"name": "ValueError", "message": "down"},
            "output": None,
        }
        details = http.get(f"{WF}/retrying/instances/r1").json()["result"]
        step = details["steps"][0]
        assert step["success"] is None and "success" in step
        assert step["attempts"][0]["success"] is False
        assert step["config"]["retries"]["delay"] == "1 hour"


def test_unknown_workflow_instance_step_are_404_with_codes(server: LiveServer) -> None:
    _create(server, "echo", "Echo", "e1")
    with server.http() as http:
        cases = {
            f"{WF}/nope": 10200,
            f"{WF}/nope/instances/e1": 10200,
            f"{WF}/echo/instances/nope": 10400,
            f"{WF}/echo/instances/nope/step?name=echo-1&type=step": 10400,
            f"{WF}/echo/instances/e1/step?name=nope-1&type=step": 10402,
            f"{WF}/echo/versions/nope": 10300,
            "/accounts/x/nowhere": 10006,
        }
        for path, code in cases.items():
            answer = http.get(path)
            assert answer.status_code == 404, path
            body = answer.json()
            assert body["success"] is False and body["result"] is None
            assert body["errors"][0]["code"] == code, path


def test_batch_delete_and_delete(server: LiveServer) -> None:
    _create(server, "echo", "Echo", "d1", "d2", "d3")
    with server.http() as http:
        answer = http.post(
            f"{WF}/echo/instances/batch/delete", json={"instances": ["d1", "gone", "d1", "d2"]}
        )
        assert answer.status_code == 200
        assert answer.json()["result"] == {
            "deleted": [{"id": "d1"}, {"id": "d1"}, {"id": "d2"}],
            "errors": [
                {"id": "gone", "code": 10400, "message": "workflows.api.error.instance.not_found"}
            ],
        }
        clean = http.post(f"{WF}/echo/instances/batch/delete", json={"instances": ["d3"]})
        assert clean.json()["result"] == {"deleted": [{"id": "d3"}], "errors": []}
        _create(server, "echo", "Echo", "d4")
        single = http.delete(f"{WF}/echo/instances/d4")
        assert single.status_code == 200 and single.json()["result"]["instanceId"] == "d4"
        assert http.delete(f"{WF}/echo/instances/d4").status_code == 404
        assert http.get(f"{WF}/echo/instances/d4").status_code == 404


def test_batch_terminate_and_terminate_all(server: LiveServer) -> None:
    _create(server, "waiter", "Waiter", "w1", "w2", "w3", "w4")
    for instance_id in ("w1", "w2", "w3", "w4"):
        server.wait_status("waiter", instance_id, {"waiting"})
    with server.http() as http:
        batch = http.post(f"{WF}/waiter/instances/batch/terminate", json=["w1", "w2", "nope"])
        assert batch.json()["result"] == {"instancesTerminated": 2, "status": "ok"}
        started = http.put(f"{WF}/waiter/instances/terminate", params={"status": "waiting"})
        assert started.status_code == 200
        assert started.json()["result"]["status"] in ("ok", "already_running")
        deadline = time.monotonic() + 10
        while http.get(f"{WF}/waiter/instances/terminate").json()["result"] != {
            "status": "not_running"
        }:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        listed = http.get(f"{WF}/waiter/instances").json()["result"]
        assert {i["status"] for i in listed} == {"terminated"}
        # The background job acts for whoever asked: the audit log names the token's holder.
        audit = http.get(
            f"/accounts/{ACCOUNT}/stepstone/audit", params={"action": "terminate"}
        ).json()["result"]
        by_instance = {e["instance"]: e["actor"]["name"] for e in audit}
        assert by_instance.keys() >= {"w3", "w4"}
        assert {by_instance["w3"], by_instance["w4"]} == {"test-admin"}
        bad = http.put(f"{WF}/waiter/instances/terminate", params={"status": "complete"})
        assert bad.status_code == 400


def test_instances_list_cursor_walk_and_trailing_slash(server: LiveServer) -> None:
    _create(server, "echo", "Echo", *[f"c{n}" for n in range(5)])
    with server.http() as http:
        seen: list[str] = []
        url = f"{WF}/echo/instances?per_page=2"
        cursor = None
        for _ in range(5):
            answer = http.get(url + (f"&cursor={cursor}" if cursor else "")).json()
            seen += [i["id"] for i in answer["result"]]
            cursor = answer["result_info"].get("cursor")
            if cursor is None:
                break
        assert sorted(seen) == [f"c{n}" for n in range(5)]
        assert len(seen) == 5
        newest = http.get(f"{WF}/echo/instances/").json()["result"]
        assert newest[0]["id"] == "c4"
        asc = http.get(f"{WF}/echo/instances?direction=asc&per_page=2").json()
        assert [i["id"] for i in asc["result"]] == ["c0", "c1"]
        after = http.get(
            f"{WF}/echo/instances?per_page=2&cursor={asc['result_info']['cursor']}"
        ).json()
        assert [i["id"] for i in after["result"]] == ["c2", "c3"]
        for date in (
            "2020-01-01T00:00:00",
            "2020-01-01T00:00:00+00:00",
            "2020-01-01T00:00:00.000Z",
        ):
            got = http.get(f"{WF}/echo/instances", params={"date_start": date}).json()
            assert len(got["result"]) == 5, date
        assert http.get(f"{WF}/echo/instances?page=9").json()["result"] == []


def test_settings_accounts_health_openapi(server: LiveServer) -> None:
    with server.http() as http:
        settings = http.get(f"{WF}/settings").json()["result"]
        # Unset, the account shows what a new workflow keeps: Cloudflare's paid default.
        assert settings["default_retention"]["success_retention"] == DEFAULT_RETENTION_MS
        assert DEFAULT_RETENTION_MS == 7 * 86_400_000
        patched = http.patch(
            f"{WF}/settings", json={"default_retention": {"success_retention": "1 day"}}
        ).json()["result"]
        assert patched["default_retention"] == {
            "success_retention": 86_400_000,
            "error_retention": DEFAULT_RETENTION_MS,
        }
        accounts = http.get("/accounts?page=1").json()
        assert accounts["result"] == [{"id": ACCOUNT, "name": ACCOUNT, "type": "standard"}]
        assert accounts["result_info"]["total_count"] == 1
        memberships = http.get("/memberships?page=1").json()
        assert memberships["result"][0]["account"]["id"] == ACCOUNT
        openapi = http.get("/openapi.json").json()
        assert "/client/v4/accounts/{account_id}/workflows/{workflow_name}" in openapi["paths"]
        assert len([p for p in openapi["paths"] if "/workflows" in p]) >= 15
    with server.http(token=None) as anonymous:
        health = anonymous.get(server.base + "/healthz")
        assert health.status_code == 200 and health.json()["result"] == {"status": "ok"}


def test_workflow_delete_answers_envelope_and_removes_instances(server: LiveServer) -> None:
    _create(server, "echo", "Echo", "x1")
    server.wait_done("echo", "x1")
    with server.http() as http:
        answer = http.delete(f"{WF}/echo", headers={"content-type": "application/json"})
        assert answer.status_code == 200
        assert answer.json() == {
            "success": True,
            "errors": [],
            "messages": [],
            "result": {"status": "ok", "success": True},
        }
        server.register("echo", "Echo")
        assert http.get(f"{WF}/echo/instances/x1").status_code == 404


def test_answers_match_their_openapi_models(server: LiveServer) -> None:
    from pydantic import BaseModel

    from stepstone.web.api import answers as a

    _create(server, "tour", "Tour", "m1")
    server.wait_step("tour", "m1", "approval-1")
    checks: list[tuple[str, type[BaseModel]]] = [
        (WF, a.Envelope[list[a.WorkflowOut]]),
        (f"{WF}/tour", a.Envelope[a.WorkflowOut]),
        (f"{WF}/tour/versions", a.Envelope[list[a.VersionOut]]),
        (f"{WF}/tour/instances", a.Envelope[list[a.InstanceOut]]),
        (f"{WF}/tour/instances/m1", a.Envelope[a.DetailsOut]),
        (f"{WF}/tour/instances/m1/step?name=flaky-1&type=step", a.Envelope[a.StepOut]),
        (f"{WF}/tour/instances/terminate", a.Envelope[a.JobState]),
        (f"{WF}/settings", a.Envelope[a.SettingsOut]),
        ("/accounts", a.Envelope[list[a.AccountOut]]),
        ("/memberships", a.Envelope[list[a.MembershipOut]]),
        (f"{WF}/nope", a.Envelope[None]),
    ]
    with server.http() as http:
        for path, model in checks:
            model.model_validate(http.get(path).json(), strict=False)
        version_id = http.get(f"{WF}/tour/versions").json()["result"][0]["id"]
        graph = http.get(f"{WF}/tour/versions/{version_id}/graph").json()
        a.Envelope[a.VersionGraphOut].model_validate(graph)
        schema = http.get("/openapi.json").json()
        details = schema["paths"][
            "/client/v4/accounts/{account_id}/workflows/{workflow_name}/instances/{instance_id}"
        ]
        assert "200" in details["get"]["responses"]
        assert "DetailsOut" in str(schema["components"]["schemas"])
