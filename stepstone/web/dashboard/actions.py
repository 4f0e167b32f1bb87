"""Form posts: sign in and out, trigger, bulk terminate/delete, instance actions, send event.

Every post but sign-in passes ``viewer``, which checks the session, the CSRF token and the
Write permission before the handler runs. An action the instance refuses (pausing a finished
instance, say) comes back as a message on the page it was asked from.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from stepstone.errors import CannotTerminate, InstanceNotFound, InvalidRequest, StepstoneError
from stepstone.ops import MAX_BATCH, CreateRequest, RestartFrom, check_payload_size
from stepstone.web.common.guard import segment
from stepstone.web.common.throttle import for_ops
from stepstone.web.dashboard import present
from stepstone.web.dashboard.access import Viewer, ViewerDep, principal_for, same_origin, state
from stepstone.web.dashboard.app import PREFIX
from stepstone.web.dashboard.operators import viewer_actor
from stepstone.web.dashboard.pages import (
    INSTANCE,
    WORKFLOW,
    instance_url,
    page,
    render_login,
    safe_next,
    set_strict_cookie,
    workflow_url,
)
from stepstone.web.dashboard.sessions import COOKIE_PATH, LOGIN_COOKIE, SESSION_COOKIE

router = APIRouter()
MAX_TOKEN_CHARS = 512


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _json_field(form: FormData, name: str) -> bytes:
    """A JSON form field, encoded; empty means null."""
    raw = _text(form, name)
    if not raw:
        return b"null"
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"{name} is not valid JSON") from None
    data = orjson.dumps(value)
    check_payload_size(data)
    return data


def back(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


async def attempt(who: Viewer, action: Awaitable[Any], success: str) -> bool:
    """Run an action; its refusal becomes a message for the next page instead of an error page."""
    try:
        await action
    except StepstoneError as exc:
        who.session.flash("error", str(exc))
        return False
    who.session.flash("ok", success)
    return True


# --- sign-in ------------------------------------------------------------------------------------


@router.post(PREFIX + "/login")
async def login(request: Request) -> Response:
    dash = state(request)
    form = await request.form()
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    given = _text(form, "csrf")
    next_url = safe_next(_text(form, "next"))
    if not (same_origin(request) and given and hmac.compare_digest(given, expected)):
        return render_login(request, next_url, "The sign-in form expired; try again.", 403)
    token = None if dash.insecure_no_auth else _text(form, "token")
    if not dash.insecure_no_auth:
        # Guesses here and at the API count together (stepstone.web.common.throttle).
        throttle = for_ops(dash.ops)
        address = request.client.host if request.client else "unknown"
        wait = throttle.retry_after(address)
        if wait is not None:
            refused = render_login(
                request, next_url, f"Too many wrong tokens; try again in {wait} s.", 429
            )
            refused.headers["retry-after"] = str(wait)
            return refused
        if not token or len(token) > MAX_TOKEN_CHARS:
            return render_login(request, next_url, "Enter an API token.", 401)
        try:
            await principal_for(dash, token)
        except StepstoneError:
            await throttle.fail(address)
            return render_login(request, next_url, "That token is unknown or revoked.", 401)
        throttle.succeeded(address)
    # A fresh id at every sign-in, so an id planted before sign-in is worth nothing after.
    dash.sessions.drop(request.cookies.get(SESSION_COOKIE))
    session_id, _ = dash.sessions.create(token)
    response = back(next_url)
    set_strict_cookie(request, response, SESSION_COOKIE, session_id)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


@router.post(PREFIX + "/logout")
async def logout(request: Request) -> Response:
    # Signing out needs no permission, but it does need the session's CSRF token.
    dash = state(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    session = dash.sessions.get(session_id)
    form = await request.form()
    if session is not None and session.csrf_ok(_text(form, "csrf")) and same_origin(request):
        dash.sessions.drop(session_id)
    response = back(PREFIX + "/login")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# --- workflows ----------------------------------------------------------------------------------


@router.post(WORKFLOW + "/trigger")
async def trigger(
    request: Request, who: ViewerDep, account_id: str, workflow_name: str
) -> Response:
    ops = state(request).ops
    account, name = segment(account_id), segment(workflow_name)
    form = await request.form()
    try:
        params = _json_field(form, "params")
        instance_id = _text(form, "instance_id") or None
        _, records = await ops.create_instances(
            account, name, [CreateRequest(id=instance_id, params=params)], skip_existing=False
        )
    except StepstoneError as exc:
        who.session.flash("error", str(exc))
        # The form names the page it was sent from; like sign-in's next, only a dashboard path.
        wanted = _text(form, "back")
        return back(wanted if safe_next(wanted) == wanted else workflow_url(account, name))
    who.session.flash("ok", f"Instance {records[0].id} created.")
    return back(instance_url(account, name, records[0].id))


@router.post(WORKFLOW + "/bulk")
async def bulk(request: Request, who: ViewerDep, account_id: str, workflow_name: str) -> Response:
    ops = state(request).ops
    account, name = segment(account_id), segment(workflow_name)
    workflow = await ops.workflow(account, name)
    form = await request.form()
    action = _text(form, "action")
    ids = list(dict.fromkeys(v for v in form.getlist("ids") if isinstance(v, str) and v))
    home = workflow_url(account, name)
    if action not in ("terminate", "delete"):
        raise InvalidRequest("action must be terminate or delete")
    if not ids:
        who.session.flash("error", "Select at least one instance first.")
        return back(home)
    if len(ids) > MAX_BATCH:
        who.session.flash("error", f"At most {MAX_BATCH} instances at a time.")
        return back(home)
    if _text(form, "confirm") != "yes":
        return page(request, who, "confirm.html", workflow=workflow, action=action, ids=ids)
    if action == "delete":
        deleted = await ops.delete_instances(account, name, ids, actor=viewer_actor(who))
        who.session.flash("ok", f"Deleted {len(deleted)} of {len(ids)} instances.")
        return back(home)
    done = 0
    for instance_id in ids:
        try:
            await ops.terminate(account, name, instance_id, actor=viewer_actor(who))
        except (CannotTerminate, InstanceNotFound):
            continue
        done += 1
    skipped = f" ({len(ids) - done} had already ended or were gone)" if done < len(ids) else ""
    who.session.flash("ok", f"Terminated {done} instances{skipped}.")
    return back(home)


# --- one instance -------------------------------------------------------------------------------


@router.post(INSTANCE + "/action")
async def instance_action(
    request: Request,
    who: ViewerDep,
    account_id: str,
    workflow_name: str,
    instance_id: str,
) -> Response:
    ops = state(request).ops
    where = (segment(account_id), segment(workflow_name), segment(instance_id))
    here = instance_url(*where)
    form = await request.form()
    action = _text(form, "action")
    actor = viewer_actor(who)
    if action == "pause":
        await attempt(who, ops.pause(*where, actor=actor), "Pause requested.")
    elif action == "resume":
        await attempt(who, ops.resume(*where, actor=actor), "Resumed.")
    elif action == "terminate":
        rollback = _text(form, "rollback") == "yes"
        note = "Terminating with rollback." if rollback else "Terminated."
        await attempt(who, ops.terminate(*where, rollback=rollback, actor=actor), note)
    elif action == "restart":
        target = _text(form, "from")
        restart_from = None
        if target:
            try:
                kind, count, name = present.parse_restart_value(target)
            except ValueError:
                raise InvalidRequest("restart: pick a step from the list") from None
            restart_from = RestartFrom(name, count, kind)
        note = f"Restarted from {target.split(':', 2)[-1]}." if target else "Restarted."
        await attempt(who, ops.restart(*where, from_=restart_from, actor=actor), note)
    elif action == "delete":
        if await attempt(
            who, ops.delete_instances(*where[:2], [where[2]], actor=actor), f"Deleted {where[2]}."
        ):
            return back(workflow_url(*where[:2]))
    else:
        raise InvalidRequest("unknown action")
    return back(here)


@router.post(INSTANCE + "/event")
async def send_event(
    request: Request,
    who: ViewerDep,
    account_id: str,
    workflow_name: str,
    instance_id: str,
) -> Response:
    ops = state(request).ops
    where = (segment(account_id), segment(workflow_name), segment(instance_id))
    form = await request.form()
    event_type = _text(form, "type")
    try:
        payload = _json_field(form, "payload")
    except StepstoneError as exc:
        who.session.flash("error", str(exc))
        return back(instance_url(*where))
    await attempt(
        who,
        ops.send_event(*where, event_type, payload, actor=viewer_actor(who)),
        f"Event {event_type!r} sent.",
    )
    return back(instance_url(*where))
