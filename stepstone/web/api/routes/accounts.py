"""Accounts and memberships (so wrangler finds its account) and account workflow settings."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from stepstone.model.retention import DEFAULT_RETENTION_MS
from stepstone.ops import retention_ms
from stepstone.web.api import answers as a
from stepstone.web.api import deps
from stepstone.web.api.answers import doc
from stepstone.web.api.schemas import SettingsPatch
from stepstone.web.common.envelope import ok, page_info
from stepstone.web.common.query import MAX_PAGE

router = APIRouter(tags=["accounts"])


async def _visible_accounts(request: Request) -> list[str]:
    """The accounts the caller may use: those its token names, else every account known."""
    caller = deps.principal(request)
    if caller.accounts is not None:
        return list(caller.accounts)
    records, _ = await deps.ops(request).workflows(None, None, 0, 1_000_000)
    return sorted({deps.home_account(request), *(r.account_id for r in records)})


def _page(items: list[str], page: int, per_page: int) -> list[str]:
    return items[(page - 1) * per_page : page * per_page]


@router.get(
    "/client/v4/accounts",
    summary="Accounts visible to the caller",
    responses=doc(list[a.AccountOut]),
)
async def list_accounts(
    request: Request,
    page: int = Query(1, ge=1, le=MAX_PAGE),
    per_page: int = Query(20, ge=1, le=50),
) -> Response:
    accounts = await _visible_accounts(request)
    result = [{"id": a, "name": a, "type": "standard"} for a in _page(accounts, page, per_page)]
    return ok(result, page_info(len(result), per_page, len(accounts), page))


@router.get(
    "/client/v4/memberships",
    summary="The caller's account memberships",
    responses=doc(list[a.MembershipOut]),
)
async def list_memberships(
    request: Request,
    page: int = Query(1, ge=1, le=MAX_PAGE),
    per_page: int = Query(20, ge=1, le=50),
) -> Response:
    accounts = await _visible_accounts(request)
    result = [
        {"id": f"membership-{a}", "status": "accepted", "account": {"id": a, "name": a}}
        for a in _page(accounts, page, per_page)
    ]
    return ok(result, page_info(len(result), per_page, len(accounts), page))


async def _settings(request: Request, account_id: str) -> dict[str, object]:
    success, error = await deps.ops(request).account_settings(account_id)
    return {
        "default_retention": {
            "success_retention": DEFAULT_RETENTION_MS if success is None else success,
            "error_retention": DEFAULT_RETENTION_MS if error is None else error,
        }
    }


SETTINGS = deps.ACCOUNT_PREFIX + "/workflows/settings"


@router.get(
    SETTINGS,
    summary="Account workflow settings (default retention, ms)",
    responses=doc(a.SettingsOut),
)
async def get_settings(request: Request, account_id: str) -> Response:
    return ok(await _settings(request, deps.path(request, "account_id")))


@router.patch(
    SETTINGS,
    summary="Change the account's default retention",
    responses=doc(a.SettingsOut),
)
async def patch_settings(request: Request, account_id: str, body: SettingsPatch) -> Response:
    account = deps.path(request, "account_id")
    ops = deps.ops(request)
    success, error = await ops.account_settings(account)
    given = body.default_retention.model_fields_set
    if "success_retention" in given:
        success = retention_ms(body.default_retention.success_retention, "success_retention")
    if "error_retention" in given:
        error = retention_ms(body.default_retention.error_retention, "error_retention")
    await ops.set_account_settings(account, success, error)
    return ok(await _settings(request, account))
