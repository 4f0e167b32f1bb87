"""createBatch's object form (Cloudflare, 2026-10-08): ``{count}`` and ``{instances}`` report
each entry that was not created, on the binding (every backend) and over REST; the array form
is unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from stepstone import Engine, WorkerSettings
from stepstone.errors import InvalidRequest
from tests.api.conftest import ACCOUNT, LiveServer
from tests.engine import flows

WF = f"/accounts/{ACCOUNT}/workflows"


@pytest.fixture
async def engine(backend_url: str) -> Any:
    # No worker: what is created stays queued, so the test reads what the batch wrote.
    eng = await Engine.open(backend_url, run_worker=False, worker_settings=WorkerSettings())
    await eng.register("seq", flows.Sequential)
    try:
        yield eng
    finally:
        await eng.close()


async def test_instances_form_reports_duplicates_existing_and_reserved_ids(engine: Engine) -> None:
    binding = engine.workflow("seq")
    await binding.create(id="old", params={"n": 1})
    result = await binding.create_batch(
        {
            "instances": [
                {"id": "a", "params": {"n": 1}},
                {"id": "old"},
                {"id": "a", "params": {"n": 2}},
                {"id": "terminate"},
                {"id": "batch"},
                {"id": "terminateAll"},
                {"id": "cf_" + "ab" * 32},
                {"id": "b", "retention": {"successRetention": "1 day"}},
                {"id": "bad id!"},
                {"id": "c", "nope": 1},
            ]
        }
    )
    assert [h.id for h in result["created"]] == ["a", "b"]
    codes = [(e["index"], e["id"], e["code"]) for e in result["errors"]]
    assert codes == [
        (1, "old", 10405),
        (2, "a", 10415),
        (3, "terminate", 10401),
        (4, "batch", 10401),
        (5, "terminateAll", 10401),
        (6, "cf_" + "ab" * 32, 10401),
        (8, "bad id!", 10401),
        (9, "c", 10002),
    ]
    messages = {e["code"]: e["message"] for e in result["errors"]}
    assert messages[10415] == "workflows.api.error.instance.duplicate_in_batch"
    assert messages[10405] == "workflows.api.error.instance.already_exists"
    # The first "a" is the one created: its params, not the duplicate's.
    _, a = await engine.ops.instance("default", "seq", "a")
    assert a.params == b'{"n":1}'
    _, b = await engine.ops.instance("default", "seq", "b")
    assert b.success_retention_ms == 86_400_000
    # "terminate" in the array form (deprecated) is still an ordinary id.
    legacy = await binding.create_batch([{"id": "terminate"}, {"id": "old"}])
    assert [h.id for h in legacy] == ["terminate"]


async def test_count_form_creates_n_with_generated_ids(engine: Engine) -> None:
    result = await engine.workflow("seq").create_batch(
        count=3, params={"n": 2}, retention={"errorRetention": "2 days"}
    )
    ids = [h.id for h in result["created"]]
    assert len(set(ids)) == 3 and result["errors"] == []
    for instance_id in ids:
        _, record = await engine.ops.instance("default", "seq", instance_id)
        assert record.params == b'{"n":2}' and record.error_retention_ms == 2 * 86_400_000


@pytest.mark.parametrize(
    "options",
    [
        {"count": 0},
        {"count": 101},
        {"count": True},
        {"count": 2, "instances": [{}]},
        {},
        {"instances": []},
        {"instances": [{}] * 101},
        {"instances": [{"id": "x"}], "params": 1},
        {"instances": "abc"},
        {"count": 1, "extra": 1},
    ],
)
async def test_bad_batch_objects_are_refused_whole(engine: Engine, options: Any) -> None:
    with pytest.raises(InvalidRequest):
        await engine.workflow("seq").create_batch(options)
    counts = await engine.storage.count_instances((await engine.ops.workflow("default", "seq")).pk)
    assert counts == {}


def test_rest_object_form_and_array_form(server: LiveServer) -> None:
    server.register("echo", "Echo")
    url = f"{WF}/echo/instances/batch"
    with server.http() as http:
        assert http.post(f"{WF}/echo/instances", json={"instance_id": "x1"}).status_code == 200
        answer = http.post(
            url,
            json={
                "instances": [
                    {"instance_id": "x2", "params": {"k": 1}},
                    {"id": "x1"},
                    {"instance_id": "x2"},
                    {"id": "terminate"},
                    {"instance_id": "x3", "instance_retention": {"success_retention": "soon"}},
                ]
            },
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()["result"]
        assert [c["id"] for c in body["created"]] == ["x2"]
        assert body["created"][0]["status"] == "queued"
        assert [(e["index"], e["id"], e["code"]) for e in body["errors"]] == [
            (1, "x1", 10405),
            (2, "x2", 10415),
            (3, "terminate", 10401),
            (4, "x3", 10002),
        ]
        counted = http.post(url, json={"count": 2, "params": {"k": 2}}).json()["result"]
        assert len(counted["created"]) == 2 and counted["errors"] == []
        # The array form keeps skipping existing ids, and its answer keeps its shape.
        legacy = http.post(url, json=[{"instance_id": "x1"}, {"instance_id": "x4"}]).json()
        assert [r["id"] for r in legacy["result"]] == ["x4"]
        for bad in ({"count": 0}, {"count": 1, "instances": [{}]}, {}, {"count": "2"}):
            refused = http.post(url, json=bad)
            assert refused.status_code == 400, (bad, refused.text)
            assert refused.json()["errors"][0]["code"] == 10002
