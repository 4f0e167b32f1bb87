"""An instance looked up by account, workflow name and id in one read, on every backend: what
a status poll, a step fetch and an operator's action start with."""

from __future__ import annotations

from stepstone.storage.base import WorkflowDefinition
from tests.storage.conftest import NOW, Fixture


async def test_the_workflow_and_its_instance_come_in_one_read(fx: Fixture) -> None:
    await fx.create("a")
    storage, workflow = fx.storage, fx.workflow
    # Another account's workflow of the same name, with an instance of the same id.
    other = await storage.register_workflow(
        "other", workflow.name, WorkflowDefinition("Elsewhere", "elsewhere"), NOW
    )
    await storage.create_instances(other.pk, other.version.id, [], NOW, skip_existing=False)

    # As a lookup by name sees it now (the create stamped when it was last triggered).
    current = await storage.get_workflow("acct", workflow.name)
    assert current is not None and current.pk == workflow.pk
    found = await storage.get_workflow_instance("acct", workflow.name, "a")
    assert found == (current, await fx.get("a"))
    assert await storage.get_workflow_instance("acct", workflow.name, "b") == (current, None)
    assert await storage.get_workflow_instance("acct", "missing", "a") is None
    elsewhere = await storage.get_workflow_instance("other", workflow.name, "a")
    assert elsewhere is not None and elsewhere[0].pk == other.pk and elsewhere[1] is None

    exists, summary = await storage.get_instance_summary("acct", workflow.name, "a")
    assert exists and summary is not None and summary[0] == await fx.get("a")
    assert await storage.get_instance_summary("other", workflow.name, "a") == (True, None)
    assert await storage.get_instance_summary("nobody", workflow.name, "a") == (False, None)


async def test_a_workflow_registered_again_shows_its_new_version(fx: Fixture) -> None:
    await fx.create("a")
    again = await fx.storage.register_workflow(
        "acct", fx.workflow.name, WorkflowDefinition("OrderWorkflowV2", "shop.orders"), NOW + 1
    )
    found = await fx.storage.get_workflow_instance("acct", fx.workflow.name, "a")
    assert found is not None
    workflow, instance = found
    assert workflow.version.class_name == "OrderWorkflowV2" == again.version.class_name
    assert instance is not None and instance.version_id == fx.workflow.version.id
