"""Child workflows' links in instance details, over real HTTP with the official SDK (issue 17):
a namespaced ``stepstone`` key on instances that have a parent or children, nothing on others,
and the SDK's strict models take both."""

from __future__ import annotations

from tests.api.conftest import ACCOUNT, LiveServer
from tests.engine.test_children import Doubler, Parent
from tests.sdk_args import AccountArg

A: AccountArg = {"account_id": ACCOUNT}


def test_parent_and_child_link_to_each_other_in_instance_details(server: LiveServer) -> None:
    server.run(server.engine.register("parent", Parent))
    server.run(server.engine.register("doubler", Doubler))
    client = server.sdk()
    client.workflows.instances.create("parent", **A, instance_id="p1")
    server.wait_status("parent", "p1", {"complete"})
    parent = client.workflows.instances.get("p1", **A, workflow_name="parent")
    assert parent.model_extra is not None
    [child] = parent.model_extra["stepstone"]["children"]
    assert (child["workflow"], child["status"], child["detached"]) == ("doubler", "complete", False)
    assert parent.model_extra["stepstone"]["parent"] is None
    back = client.workflows.instances.get(child["id"], **A, workflow_name="doubler")
    assert back.model_extra is not None
    assert back.model_extra["stepstone"]["parent"] == {
        "workflow": "parent",
        "id": "p1",
        "status": "complete",
    }
    # An instance with no links looks exactly as Cloudflare's would.
    client.workflows.instances.create("doubler", **A, instance_id="alone", params='{"n": 1}')
    server.wait_status("doubler", "alone", {"complete"})
    alone = client.workflows.instances.get("alone", **A, workflow_name="doubler")
    assert "stepstone" not in (alone.model_extra or {})
