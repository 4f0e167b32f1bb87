"""The project's Worker, served: its ``fetch`` answers HTTP on its own address, its
``scheduled`` handler runs on ``[triggers] crons``.

The Worker is the ``Default`` class of ``main`` (a ``WorkerEntrypoint``), else the one
``WorkerEntrypoint`` subclass ``main`` defines, else a module-level ``on_fetch(request, env,
ctx)`` as older Python Workers wrote it. As on Cloudflare, each request gets a new instance,
with ``self.env`` (vars, secrets, workflow bindings) and ``self.ctx`` (``wait_until``).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from croniter import croniter
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route

from stepstone.cloudflare import shim
from stepstone.cloudflare.sdk import Context, Request, Response, WorkerEntrypoint

log = logging.getLogger("stepstone.worker_app")

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass
class ScheduledController:
    """What ``scheduled`` receives, as on Cloudflare: the cron and its time (epoch ms)."""

    cron: str
    scheduledTime: int  # Cloudflare's name
    type: str = "scheduled"

    @property
    def scheduled_time(self) -> int:
        return self.scheduledTime

    def noRetry(self) -> None:
        """Stepstone does not retry a failed scheduled run, so there is nothing to turn off."""

    no_retry = noRetry


def find_worker(module: ModuleType) -> type[WorkerEntrypoint] | Callable[..., Any] | None:
    default = getattr(module, "Default", None)
    if isinstance(default, type) and issubclass(default, WorkerEntrypoint):
        return default
    own = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, WorkerEntrypoint)
        and value is not WorkerEntrypoint
        and value.__module__ == module.__name__
    ]
    if len(own) == 1:
        return own[0]
    on_fetch = getattr(module, "on_fetch", None)
    return on_fetch if callable(on_fetch) else None


def next_fire_ms(crons: Sequence[str], now_ms: int) -> tuple[int, list[str]]:
    """The next time any of ``crons`` fires after ``now_ms``, and which of them fire then."""
    start = datetime.fromtimestamp(now_ms / 1000, UTC)
    times = {cron: int(croniter(cron, start).get_next(float) * 1000) for cron in crons}
    soonest = min(times.values())
    return soonest, [cron for cron, at in times.items() if at == soonest]


class WorkerApp:
    """The Worker's ASGI app, its wait_until tasks and its cron loop."""

    def __init__(
        self,
        main_module: str,
        env: Any,
        crons: Sequence[str] = (),
        *,
        test_scheduled: bool = False,
    ) -> None:
        self.env = env
        self.crons = tuple(crons)
        self.test_scheduled = test_scheduled
        self._pending: set[asyncio.Task[Any]] = set()
        self._cron_task: asyncio.Task[None] | None = None
        self.problem: str | None = None
        self.target: type[WorkerEntrypoint] | Callable[..., Any] | None = None
        self.module: ModuleType | None = None
        shim.install()
        try:
            self.module = importlib.import_module(main_module)
        except Exception as exc:
            self.problem = f"the Worker's module {main_module!r} failed to import: {exc!r}"
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            self.problem += f" ({frame.filename}, line {frame.lineno})"
            # One line for the operator; the traceback only for whoever asks for debug logs.
            log.error("%s", self.problem)
            log.debug("the Worker's module %r failed to import", main_module, exc_info=True)
        else:
            self.target = find_worker(self.module)
            if self.target is None:
                self.problem = (
                    f"{main_module} defines no Worker: a WorkerEntrypoint subclass named"
                    " Default, or an on_fetch function"
                )
        self.asgi = Starlette(routes=[Route("/{path:path}", self._serve, methods=METHODS)])

    # --- requests ---------------------------------------------------------------------------

    def _context(self) -> Context:
        return Context(self._wait_until)

    def _wait_until(self, awaitable: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await awaitable
            except Exception:
                log.exception("a ctx.wait_until task of the Worker failed")

        task = asyncio.ensure_future(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _instance(self, ctx: Context) -> WorkerEntrypoint:
        assert isinstance(self.target, type)
        instance: WorkerEntrypoint = self.target(ctx, self.env)
        return instance

    async def _serve(self, request: StarletteRequest) -> StarletteResponse:
        if self.test_scheduled and request.url.path == "/__scheduled":
            cron = request.query_params.get("cron", self.crons[0] if self.crons else "")
            await self.scheduled(cron, int(time.time() * 1000))
            return StarletteResponse("Ran scheduled event\n", media_type="text/plain")
        if self.target is None:
            return StarletteResponse(f"{self.problem}\n", status_code=500)
        incoming = Request(
            str(request.url),
            method=request.method,
            headers=list(request.headers.items()),
            body=await request.body(),
        )
        ctx = self._context()
        try:
            if isinstance(self.target, type):
                instance = self._instance(ctx)
                fetch = getattr(instance, "fetch", None)
                if fetch is None:
                    return StarletteResponse("the Worker has no fetch handler\n", status_code=500)
                result = fetch(incoming)
            else:
                # workerd calls a module-level handler "relaxed" (Pyodide drops the arguments
                # it does not take), so the docs' `on_fetch(request, env)` works there.
                arity = _positional_count(self.target)
                result = self.target(*[incoming, self.env, ctx][: max(arity, 1)])
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            log.exception("the Worker's fetch raised")
            return StarletteResponse("Internal Server Error\n", status_code=500)
        if not isinstance(result, Response):
            log.error("the Worker's fetch returned %r, not a workers.Response", result)
            return StarletteResponse(
                f"the Worker's fetch returned {type(result).__name__}, not a Response\n",
                status_code=500,
            )
        response = StarletteResponse(result._content, status_code=result.status)
        for key, value in result.headers.items():
            response.headers.append(key, value)
        return response

    # --- scheduled --------------------------------------------------------------------------

    async def scheduled(self, cron: str, scheduled_ms: int) -> None:
        """Run the Worker's ``scheduled`` handler once; a failure is logged, not retried."""
        ctx = self._context()
        call: Callable[..., Any] | None
        if isinstance(self.target, type):
            call = getattr(self._instance(ctx), "scheduled", None)
        else:
            call = getattr(self.module, "on_scheduled", None)
        if call is None:
            log.warning("cron %r fired but the Worker has no scheduled handler", cron)
            return
        controller = ScheduledController(cron, scheduled_ms)
        try:
            # Cloudflare passes (controller, env, ctx); handlers may take fewer.
            arity = _positional_count(call)
            result = call(*[controller, self.env, ctx][: max(arity, 1)])
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("the Worker's scheduled handler raised (cron %r)", cron)

    async def _cron_loop(self) -> None:
        while True:
            fire_at, due = next_fire_ms(self.crons, int(time.time() * 1000))
            await asyncio.sleep(max(0.0, fire_at / 1000 - time.time()))
            for cron in due:
                await self.scheduled(cron, fire_at)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self.crons and self._cron_task is None:
            self._cron_task = asyncio.create_task(self._cron_loop(), name="stepstone-crons")

    async def stop(self, timeout: float) -> None:
        """Stop firing crons; give wait_until work up to ``timeout`` seconds to finish."""
        if self._cron_task is not None:
            self._cron_task.cancel()
            await asyncio.gather(self._cron_task, return_exceptions=True)
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)
            for task in list(self._pending):
                task.cancel()


def _positional_count(func: Callable[..., Any]) -> int:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 3
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return 3
    return sum(
        p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for p in parameters
    )
