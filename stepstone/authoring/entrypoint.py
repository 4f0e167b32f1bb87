"""``WorkflowEntrypoint`` and the event it receives, shaped like Cloudflare Python Workflows."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepstone.authoring.step import WorkflowStep

_ALIASES = {"instance_id": "instanceId", "workflow_name": "workflowName"}


class WorkflowEvent(Mapping[str, Any]):
    """The immutable event of one instance.

    Both access styles of Cloudflare Python work: ``event["payload"]``, ``event["instanceId"]``
    and ``event.payload``, ``event.instance_id``. ``timestamp`` is the instance's creation time
    (an aware UTC datetime); ``schedule`` is ``{"cron", "scheduledTime"}`` for cron runs.
    """

    __slots__ = ("_data",)

    def __init__(
        self,
        *,
        payload: Any,
        timestamp: datetime,
        instance_id: str,
        workflow_name: str,
        schedule: Mapping[str, Any] | None = None,
    ) -> None:
        data: dict[str, Any] = {
            "payload": payload,
            "timestamp": timestamp,
            "instanceId": instance_id,
            "workflowName": workflow_name,
        }
        if schedule is not None:
            data["schedule"] = dict(schedule)
        object.__setattr__(self, "_data", data)

    def __getitem__(self, key: str) -> Any:
        return self._data[_ALIASES.get(key, key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[_ALIASES.get(name, name)]
        except KeyError:
            if name == "schedule":
                return None
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("WorkflowEvent is immutable")

    def __repr__(self) -> str:
        return f"WorkflowEvent({self._data!r})"


class WorkflowEntrypoint:
    """Base class of a workflow: implement ``async def run(self, event, step)``.

    ``self.env`` holds bindings to the registered workflows (``self.env.ORDERS.create(...)``,
    ``self.env["orders"]``) and the values configured under ``[env]`` in stepstone.toml.
    """

    def __init__(self, ctx: Any = None, env: Any = None) -> None:
        self.ctx = ctx
        self.env = env

    async def run(self, event: WorkflowEvent, step: WorkflowStep) -> Any:
        raise NotImplementedError("a workflow implements async def run(self, event, step)")
