"""Versions: one per PUT, newest first; the graph is not computed for Python (null)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from stepstone import views
from stepstone.errors import VersionNotFound
from stepstone.model.records import VersionRecord, WorkflowRecord
from stepstone.web.api import answers as a
from stepstone.web.api import deps
from stepstone.web.api.answers import doc
from stepstone.web.common.envelope import ok, page_info
from stepstone.web.common.query import MAX_PAGE

router = APIRouter(tags=["versions"])
VERSION = deps.WORKFLOW_PREFIX + "/versions/{version_id}"


@router.get(
    deps.WORKFLOW_PREFIX + "/versions",
    summary="List versions, newest first",
    responses=doc(list[a.VersionOut]),
)
async def list_versions(
    request: Request,
    account_id: str,
    workflow_name: str,
    page: int = Query(1, ge=1, le=MAX_PAGE),
    per_page: int = Query(50, ge=1, le=100),
) -> Response:
    ops = deps.ops(request)
    workflow = await ops.workflow(
        deps.path(request, "account_id"), deps.path(request, "workflow_name")
    )
    versions, total = await ops.versions(workflow.pk, (page - 1) * per_page, per_page)
    result = [views.version(v, workflow) for v in versions]
    return ok(result, page_info(len(result), per_page, total, page))


async def _answer(
    request: Request, render: Callable[[VersionRecord, WorkflowRecord], dict[str, Any]]
) -> Response:
    ops = deps.ops(request)
    workflow = await ops.workflow(
        deps.path(request, "account_id"), deps.path(request, "workflow_name")
    )
    version_id = deps.path(request, "version_id")
    version = await ops.version(workflow.pk, version_id)
    if version is None:
        raise VersionNotFound(f"Version {version_id!r} not found")
    return ok(render(version, workflow))


@router.get(VERSION, summary="Get a version", responses=doc(a.VersionOut))
async def get_version(
    request: Request, account_id: str, workflow_name: str, version_id: str
) -> Response:
    return await _answer(request, views.version)


@router.get(
    VERSION + "/graph",
    summary="A version's step graph (null: not computed)",
    responses=doc(a.VersionGraphOut),
)
async def version_graph(
    request: Request, account_id: str, workflow_name: str, version_id: str
) -> Response:
    return await _answer(request, views.version_graph)


@router.get(VERSION + "/dag", summary="The older form of the graph (null)")
async def version_dag(
    request: Request, account_id: str, workflow_name: str, version_id: str
) -> Response:
    return await _answer(request, views.version_dag)
