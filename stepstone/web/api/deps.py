"""What route handlers share: the operations, the caller, path parameters as meant."""

from __future__ import annotations

from fastapi import Request

from stepstone.ops import Operations
from stepstone.web.common.auth import Principal
from stepstone.web.common.guard import segment

ACCOUNT_PREFIX = "/client/v4/accounts/{account_id}"
WORKFLOW_PREFIX = ACCOUNT_PREFIX + "/workflows/{workflow_name}"
INSTANCE_PREFIX = WORKFLOW_PREFIX + "/instances/{instance_id}"


def ops(request: Request) -> Operations:
    value: Operations = request.app.state.ops
    return value


def home_account(request: Request) -> str:
    """The project's account (``stepstone.toml``'s ``account_id``)."""
    value: str = request.app.state.home_account
    return value


def principal(request: Request) -> Principal:
    value: Principal = request.state.principal
    return value


def path(request: Request, name: str) -> str:
    return segment(request.path_params[name])
