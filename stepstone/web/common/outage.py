"""Answers while the store is out: 503 when its database is unreachable, 507 when its disk is
full, each enveloped with its own code and a ``Retry-After``; and ``/readyz``.

Without this a request waits out a whole database outage (the store retries for minutes, so
that workers ride it out), and a full disk surfaces as the generic 500 with a traceback each.

A request cannot simply give up on its own: most share statements with other callers
(``postgres_batch``), whose retrying carries on in tasks of their own. So while an episode of
"unreachable" is under way, requests that have not begun their answer are swept: one that has
waited ``PATIENCE_S`` since it arrived or since the episode began is cancelled and answered
503. What it asked for may still happen if the database comes back at that instant, as with
any answer lost to a timeout. A response already under way (an event stream) is left alone.

It wraps everything else (the Guard included, whose token lookups read the store too), so
``/readyz`` is answered here, without credentials, as ``/healthz`` is.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stepstone.errors import InvalidRequest, StepstoneError, StorageFull, StorageUnavailable
from stepstone.model.outage import StoreFull, StoreOutage, StoreUnreachable
from stepstone.ops import Queries
from stepstone.web.common.envelope import error, ok

READY_PATH = "/readyz"
# Well inside the 5 s a client may wait for an answer during an outage (issue 11).
PATIENCE_S = 3.0
SWEEP_S = 0.25
# A database restart takes seconds; freeing disk space takes someone's attention.
RETRY_AFTER_S = {"unreachable": 5, "full": 60}


def api_error(outage: StoreOutage) -> StepstoneError:
    if isinstance(outage, StoreFull):
        return StorageFull("the disk under the store is full; the request was not carried out")
    return StorageUnavailable("the database cannot be reached; try again shortly")


def outage_answer(outage: StoreOutage) -> Response:
    answer = error(api_error(outage))
    answer.headers["retry-after"] = str(RETRY_AFTER_S.get(outage.kind, 5))
    return answer


class OutageGuard:
    def __init__(self, app: ASGIApp, *, ops: Queries) -> None:
        self.app = app
        self.ops = ops
        self.health = ops.store_health
        # Requests not yet answering: their task, and when they arrived (loop time).
        self._waiting: dict[asyncio.Task[Any], float] = {}
        self._cut: set[asyncio.Task[Any]] = set()
        self._sweep: asyncio.TimerHandle | None = None
        if self.health is not None:
            self.health.add_listener(self._episode_began)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == READY_PATH:
            ready = await self._readiness(scope["method"])
            await ready(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        waiting = self._waiting
        answering = False

        async def sending(message: Message) -> None:
            nonlocal answering
            if not answering and message["type"] == "http.response.start":
                answering = True
                waiting.pop(task, None)
            await send(message)

        waiting[task] = asyncio.get_running_loop().time()
        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            if task not in self._cut:
                raise
            self._cut.discard(task)
            task.uncancel()
            await outage_answer(self._current())(scope, receive, send)
        except StoreOutage as exc:
            if answering:
                raise
            await outage_answer(exc)(scope, receive, send)
        finally:
            waiting.pop(task, None)
            if task in self._cut:  # cut just as it finished: the cancellation is void
                self._cut.discard(task)
                task.uncancel()

    def _current(self) -> StoreOutage:
        failing = self.health.failing if self.health is not None else None
        return failing or StoreUnreachable("the database is unreachable")

    # --- cutting requests short while the database is unreachable -----------------------

    def _episode_began(self, outage: StoreOutage) -> None:
        if not isinstance(outage, StoreUnreachable) or self._sweep is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # noticed off the loop: the next request's episode check covers it
            return
        self._sweep = loop.call_later(SWEEP_S, self._sweep_waiting)

    def _sweep_waiting(self) -> None:
        self._sweep = None
        health = self.health
        if health is None or not isinstance(health.failing, StoreUnreachable):
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        began = health.since if health.since is not None else now
        for task, arrived in list(self._waiting.items()):
            if now - max(arrived, began) >= PATIENCE_S and task not in self._cut:
                self._cut.add(task)
                task.cancel()
        self._sweep = loop.call_later(SWEEP_S, self._sweep_waiting)

    # --- /readyz -------------------------------------------------------------------------

    async def _readiness(self, method: str) -> Response:
        if method not in ("GET", "HEAD"):
            wrong = InvalidRequest(f"{method} is not allowed on {READY_PATH}")
            wrong.http_status = 405
            answer = error(wrong)
            answer.headers["allow"] = "GET, HEAD"
            return answer
        health = self.health
        if health is not None and isinstance(health.failing, StoreUnreachable):
            return outage_answer(health.failing)
        try:
            async with asyncio.timeout(PATIENCE_S):
                await self.ops.probe_store()
        except TimeoutError:
            return outage_answer(StoreUnreachable("no answer within the patience"))
        except StoreUnreachable as exc:
            return outage_answer(exc)
        full = health is not None and isinstance(health.failing, StoreFull)
        # A full disk still serves reads: ready, with the writes refused said in the body.
        return ok({"status": "ok", "storage": "full" if full else "ok"})
