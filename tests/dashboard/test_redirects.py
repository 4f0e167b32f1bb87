"""Where a form post sends the browser next: only ever a page of this dashboard."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import ACCOUNT, LiveServer, csrf_of, sign_in

HOME = f"/dashboard/accounts/{ACCOUNT}/workflows/waiter"
FOREIGN = [
    "https://evil.example/",
    "//evil.example/",
    "/\\evil.example",
    "http:evil.example",
    "javascript:alert(1)",
    "/client/v4/accounts",
]


@pytest.mark.parametrize("target", FOREIGN)
def test_a_failed_trigger_never_goes_back_off_the_dashboard(
    dash_sqlite: LiveServer, target: str
) -> None:
    with sign_in(dash_sqlite, dash_sqlite.token) as client:
        csrf = csrf_of(client.get(HOME).text)
        # An instance id the engine refuses makes the trigger fail, which is when back is used.
        answer = client.post(
            f"{HOME}/trigger", data={"csrf": csrf, "instance_id": "no good!", "back": target}
        )
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == HOME


def test_a_failed_trigger_goes_back_to_the_dashboard_page_it_came_from(
    dash_sqlite: LiveServer,
) -> None:
    with sign_in(dash_sqlite, dash_sqlite.token) as client:
        csrf = csrf_of(client.get(HOME).text)
        answer = client.post(
            f"{HOME}/trigger",
            data={"csrf": csrf, "instance_id": "no good!", "back": "/dashboard/workflows"},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/workflows"
