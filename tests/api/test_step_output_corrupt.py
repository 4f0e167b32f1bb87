"""A byte-stream step whose stored chunks are incomplete answers instance.step_output_corrupt
(miniflare's "Stored output for <step> is corrupt or incomplete.") instead of partial bytes."""

from __future__ import annotations

import httpx

from tests.api.conftest import ACCOUNT, LiveServer, execute_sql

WF = f"/accounts/{ACCOUNT}/workflows"


def test_missing_chunk_is_corrupt_not_partial(server: LiveServer) -> None:
    server.register("tour", "Tour")
    with server.http() as http:
        assert http.post(f"{WF}/tour/instances", json={"instance_id": "t1"}).status_code == 200
        server.wait_step("tour", "t1", "approval-1")
        step = f"{WF}/tour/instances/t1/step"
        whole = http.get(step, params={"name": "blob-1", "type": "step"})
        assert whole.status_code == 200 and len(whole.content) == 256_000
        for damage in (
            "UPDATE stream_chunks SET data = substr(data, 1, 1000)",  # a short chunk
            "DELETE FROM stream_chunks",  # a missing one
        ):
            execute_sql(server.db_url, damage)
            _assert_corrupt(http.get(step, params={"name": "blob-1", "type": "step"}))


def _assert_corrupt(answer: httpx.Response) -> None:
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["success"] is False
    assert body["errors"][0] == {
        "code": 10411,
        "message": "workflows.api.error.instance.step_output_corrupt",
    }
    assert body["messages"][0]["message"] == "Stored output for blob-1 is corrupt or incomplete."
