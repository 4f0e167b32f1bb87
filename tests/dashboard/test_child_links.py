"""The dashboard's instance page links a child workflow's parent and a parent's children
(issue 17)."""

from __future__ import annotations

from tests.dashboard.conftest import ACCOUNT, LiveServer, sign_in
from tests.engine.test_children import Doubler, Parent


def test_the_instance_page_links_parent_and_children(dash: LiveServer) -> None:
    dash.run(dash.engine.register("parent", Parent))
    dash.run(dash.engine.register("doubler", Doubler))
    dash.run(dash.engine.workflow("parent").create(id="p1"))
    dash.wait_status("parent", "p1", {"complete"})
    base = f"/dashboard/accounts/{ACCOUNT}"
    with sign_in(dash, dash.token) as browser:
        parent = browser.get(f"{base}/workflows/parent/instances/p1").text
        assert "Related workflows" in parent
        child_id = parent.split(f'href="{base}/workflows/doubler/instances/')[1].split('"')[0]
        assert f'Child: <a href="{base}/workflows/doubler/instances/{child_id}">' in parent
        child = browser.get(f"{base}/workflows/doubler/instances/{child_id}").text
        assert f'Parent: <a href="{base}/workflows/parent/instances/p1">parent/p1</a>' in child
        dash.run(dash.engine.workflow("doubler").create(id="alone", params={"n": 1}))
        dash.wait_status("doubler", "alone", {"complete"})
        alone = browser.get(f"{base}/workflows/doubler/instances/alone").text
        assert "Related workflows" not in alone
