"""One client shape over both engines: Cloudflare's local explorer API and Stepstone's v4 API.

Both speak the same envelope (``{success, errors, messages, result}``) and the same instance
routes under ``/workflows``, so a scenario is written once and run against each.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conformance.oracle import LocalEngine

JS_WORKFLOWS = Path(__file__).with_name("workflows.mjs")
TWINS = "tests.conformance.twins"


def class_names() -> list[str]:
    """The twins' class names, as the JavaScript file exports them."""
    return re.findall(r"^export class (\w+)", JS_WORKFLOWS.read_text(), re.MULTILINE)


def workflow_name(class_name: str) -> str:
    """``RetryThenSucceed`` -> ``retry-then-succeed``: the same name on both engines."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", class_name).lower()


def wrangler_config() -> dict[str, Any]:
    return {
        "name": "stepstone-conformance",
        "main": JS_WORKFLOWS.name,
        "compatibility_date": "2026-11-01",
        "compatibility_flags": ["workflows_preserve_non_retryable_error_message"],
        "workflows": [
            {
                "name": workflow_name(name),
                "binding": workflow_name(name).upper().replace("-", "_"),
                "class_name": name,
            }
            for name in class_names()
        ],
    }


@dataclass
class Side:
    """An engine as a scenario sees it."""

    label: str
    call: Callable[[str, str, Any], tuple[int, Any]]
    # The v4 API names the new instance's id ``instance_id``; the local explorer API ``id``.
    id_key: str

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        if status != 200 or not isinstance(answer, dict) or not answer.get("success"):
            raise AssertionError(f"{self.label}: {method} {path} -> {status} {answer}")
        return answer["result"]

    def create(self, workflow: str, instance_id: str, params: Any = None) -> None:
        body: dict[str, Any] = {self.id_key: instance_id}
        if params is not None:
            body["params"] = params
        self.ok("POST", f"/workflows/{workflow}/instances", body)

    def details(self, workflow: str, instance_id: str) -> dict[str, Any]:
        result = self.ok("GET", f"/workflows/{workflow}/instances/{instance_id}")
        assert isinstance(result, dict)
        return result

    def send(self, workflow: str, instance_id: str, event_type: str, payload: Any) -> None:
        self.ok(
            "POST", f"/workflows/{workflow}/instances/{instance_id}/events/{event_type}", payload
        )

    def action(self, workflow: str, instance_id: str, status: str) -> None:
        self.ok(
            "PATCH", f"/workflows/{workflow}/instances/{instance_id}/status", {"status": status}
        )

    def wait(
        self,
        workflow: str,
        instance_id: str,
        until: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Poll the details until ``until`` holds; the bound only catches a hung engine."""
        deadline = time.monotonic() + timeout
        while True:
            details = self.details(workflow, instance_id)
            if until(details):
                return details
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.label}: {instance_id} never reached {what}: {details}")
            time.sleep(0.05)

    def wait_status(
        self, workflow: str, instance_id: str, *statuses: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        return self.wait(
            workflow, instance_id, lambda d: d["status"] in statuses, f"status {statuses}", timeout
        )

    def wait_step(self, workflow: str, instance_id: str, step_name: str) -> dict[str, Any]:
        return self.wait(
            workflow,
            instance_id,
            lambda d: any(s.get("name") == step_name for s in d.get("steps", [])),
            f"step {step_name}",
        )


def oracle_side(engine: LocalEngine) -> Side:
    return Side("cloudflare-local", engine.request, "id")


def stepstone_side(client: httpx.Client, account_path: str) -> Side:
    def call(method: str, path: str, body: Any) -> tuple[int, Any]:
        answer = client.request(method, f"{account_path}{path}", json=body)
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, answer.text

    return Side("stepstone", call, "instance_id")
