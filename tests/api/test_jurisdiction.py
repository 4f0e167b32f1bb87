"""``jurisdiction`` in the deploy PUT, as wrangler 4.164 sends it: stored, returned by GET and
the list (``workflows describe`` prints it), and immutable once set (10209)."""

from __future__ import annotations

from tests.api.conftest import ACCOUNT, FLOWS, LiveServer

WF = f"/accounts/{ACCOUNT}/workflows"
BODY = {"class_name": "Echo", "script_name": FLOWS}


def test_jurisdiction_is_stored_returned_and_immutable(server: LiveServer) -> None:
    with server.http() as http:
        plain = http.put(f"{WF}/plain", json=BODY).json()["result"]
        assert "jurisdiction" not in plain
        put = http.put(f"{WF}/eu-flow", json={**BODY, "jurisdiction": "eu"})
        assert put.status_code == 200 and put.json()["result"]["jurisdiction"] == "eu"
        assert http.get(f"{WF}/eu-flow").json()["result"]["jurisdiction"] == "eu"
        listed = {w["name"]: w for w in http.get(WF).json()["result"]}
        assert listed["eu-flow"]["jurisdiction"] == "eu" and "jurisdiction" not in listed["plain"]
        # A redeploy without it keeps it, one with the same value is fine.
        assert http.put(f"{WF}/eu-flow", json=BODY).json()["result"]["jurisdiction"] == "eu"
        changed = http.put(f"{WF}/eu-flow", json={**BODY, "jurisdiction": "us"})
        assert changed.status_code == 409
        assert changed.json()["errors"][0] == {
            "code": 10209,
            "message": "workflows.api.error.workflow.jurisdiction_immutable",
        }
        assert http.get(f"{WF}/eu-flow").json()["result"]["jurisdiction"] == "eu"
        bad = http.put(f"{WF}/other", json={**BODY, "jurisdiction": "mars"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == 10002
        assert http.get(f"{WF}/other").status_code == 404
