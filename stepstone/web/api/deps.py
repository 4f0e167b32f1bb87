"""What route handlers share: the engine, the caller, path parameters as meant."""

from __future__ import annotations

from fastapi import Request

from stepstone.embedded import Engine
from stepstone.ops import Operations
from stepstone.web.common.auth import Principal
from stepstone.web.common.guard import segment

ACCOUNT_PREFIX = "/client/v4/accounts/{account_id}"
WORKFLOW_PREFIX = ACCOUNT_PREFIX + "/workflows/{workflow_name}"
INSTANCE_PREFIX = WORKFLOW_PREFIX + "/instances/{instance_id}"


def engine(request: Request) -> Engine:
    value: Engine = request.app.state.engine
    return value


def ops(request: Request) -> Operations:
    return engine(request).ops


def principal(request: Request) -> Principal:
    value: Principal = request.state.principal
    return value


def path(request: Request, name: str) -> str:
    return segment(request.path_params[name])
