"""``stepstone serve`` and ``stepstone worker``: the API with an in-process worker, or a worker
alone. Both open one ``Engine`` for the life of the process."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from stepstone import auth as tokens
from stepstone.cli.server_cmds import describe_store
from stepstone.cloudflare import DEFAULT_WORKER_PORT
from stepstone.cloudflare.worker_app import WorkerApp
from stepstone.embedded import Engine
from stepstone.engine.worker import WorkerSettings
from stepstone.observability import logs, tracing
from stepstone.observability.http import MetricsOnly, parse_addr
from stepstone.web.api.app import create_api, surround
from stepstone.web.common.auth import AuthSettings
from stepstone.web.dashboard import mount_dashboard

log = logging.getLogger("stepstone.server")
DEFAULT_DATA_DIR = ".stepstone"
# On SIGTERM (a deploy), steps already running get this long to finish and be recorded.
DRAIN_SECONDS = 10.0
SHUTDOWN_GRACE_SECONDS = 5
# The start-up line names this many workflows, then says how many more there are.
SHOWN_WORKFLOWS = 8

_INSECURE_BANNER = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  --insecure-no-auth: EVERY REQUEST IS ACCEPTED WITHOUT CREDENTIALS.         !!
!!  Anyone who can reach {bind:<58} !!
!!  can create, stop and delete workflows. For local play only.               !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


def _worker_settings(
    concurrency: int, lease_seconds: float, max_running: int | None
) -> WorkerSettings:
    return WorkerSettings(
        concurrency=concurrency, max_running=max_running, lease_ms=int(lease_seconds * 1000)
    )


def build_app(
    engine: Engine, *, auth: AuthSettings | None = None, insecure_no_auth: bool = False
) -> FastAPI:
    """The whole HTTP app over an open ``engine`` (the API, the dashboard at ``/dashboard``, the
    approval pages); the caller opens and closes the engine. ``auth`` defaults to the
    environment's (``STEPSTONE_ADMIN_TOKEN``)."""
    settings = auth or AuthSettings.from_env()
    # The front-ends get the operations only; the engine stays the caller's to close.
    app = create_api(
        engine.ops,
        home_account=engine.project.account_id,
        auth=settings,
        insecure_no_auth=insecure_no_auth,
    )
    # The dashboard signs in with a session cookie, so it is served around the Guard.
    mount_dashboard(app, engine.ops, auth=settings, insecure_no_auth=insecure_no_auth)
    surround(app, engine.ops)
    return app


async def prepare_auth(engine: Engine, data_dir: Path, *, insecure_no_auth: bool) -> AuthSettings:
    """Auth settings from the environment; on a first start, an admin token printed once."""
    settings = AuthSettings.from_env()
    if insecure_no_auth or settings.admin_token is not None:
        return settings
    secret, created = await tokens.ensure_admin_token(engine.storage, data_dir)
    path = data_dir / tokens.ADMIN_TOKEN_FILE
    if logs.is_json():
        # A record, not a banner, and without the secret: JSON lines are collected and kept
        # where anyone who reads the logs would read the token. It is in the file.
        what = "created an admin API token" if created else "admin API token"
        where = str(path.absolute())
        log.warning(
            "%s: see %s (mode 0600); use it as Authorization: Bearer <token>",
            what,
            where,
            extra={logs.FIELDS: {"event": "admin_token", "created": created, "path": where}},
        )
        return settings
    if created:
        print(
            f"Created an admin API token (shown once; also saved to {path}, mode 0600):\n"
            f"  {secret}\n"
            "Use it as: Authorization: Bearer <token>  (CLOUDFLARE_API_TOKEN for wrangler/SDK)",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"Admin API token: see {path}", file=sys.stderr, flush=True)
    return settings


class StartupFailed(Exception):
    """The process cannot start; the message says why and what to do, in one line."""


def check_port(host: str, port: int, option: str) -> None:
    """Fail now, in one line, if ``host:port`` cannot be listened on.

    uvicorn would log the bind error and exit only after the store is open; this check comes
    first and names the fix. (A port taken in between still fails, through ``_serve``.)
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupFailed(
                    f"port {port} on {host} is in use (another stepstone serve?);"
                    f" stop that process or pass {option} with a free port"
                ) from None
            raise StartupFailed(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host"
            ) from None


async def describe_workflows(engine: Engine) -> str:
    records, total = await engine.storage.list_workflows(None, None, 0, SHOWN_WORKFLOWS)
    if total == 0:
        return "no workflows yet (add them to the project file, or PUT /workflows/{name})"
    names = [
        f"{r.name} (cannot import)" if r.name in engine.ops.unloadable else r.name for r in records
    ]
    more = f" and {total - len(names)} more" if total > len(names) else ""
    return f"{total} workflow{'' if total == 1 else 's'}: {', '.join(names)}{more}"


def describe_worker(concurrency: int, max_running: int | None) -> str:
    text = f"concurrency {concurrency}"
    if max_running is not None:
        text += f", at most {max_running} running across all workers"
    return text


def browsable(host: str) -> str:
    """An address a browser on this machine can open for a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def insecure_banner(bind: str) -> None:
    if logs.is_json():
        log.warning(
            "--insecure-no-auth: every request is accepted without credentials; anyone who"
            " can reach %s can create, stop and delete workflows (for local play only)",
            bind,
            extra={logs.FIELDS: {"event": "insecure_no_auth", "bind": bind}},
        )
        return
    print(_INSECURE_BANNER.format(bind=bind), file=sys.stderr)


def announce(line: str) -> None:
    if logs.is_json():
        log.info("%s", line)
        return
    print(line, file=sys.stderr, flush=True)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to ``serve_until_signal``, and says when it is up.

    uvicorn's own handling re-raises the captured SIGTERM once ``serve()`` returns, which kills
    the process before the engine drains its running steps.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None = None):
        super().__init__(config)
        self.on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()


def _log_config(log_format: str) -> dict[str, Any] | None:
    # None: uvicorn leaves logging as logs.configure set it (JSON lines).
    return None if log_format == "json" else uvicorn.config.LOGGING_CONFIG


def prepare_observability(log_format: str, metrics_addr: str | None) -> tuple[str, int] | None:
    """Logs and traces set up, and the metrics address checked, before the store opens."""
    logs.configure(log_format)
    try:
        tracing.configure_from_env()
    except ValueError as exc:
        raise StartupFailed(str(exc)) from None
    if metrics_addr is None:
        return None
    try:
        host, port = parse_addr(metrics_addr)
    except ValueError as exc:
        raise StartupFailed(str(exc)) from None
    check_port(host, port, "--metrics-addr")
    return host, port


def metrics_server(engine: Engine, where: tuple[str, int], log_format: str) -> _Server:
    """``GET /metrics`` alone, without a token, on ``--metrics-addr``."""
    return _Server(
        uvicorn.Config(
            MetricsOnly(engine.storage),
            host=where[0],
            port=where[1],
            log_level="warning",
            log_config=_log_config(log_format),
            access_log=False,
            lifespan="off",
        ),
        on_started=lambda: announce(f"Metrics on http://{browsable(where[0])}:{where[1]}/metrics"),
    )


async def _serve(server: uvicorn.Server) -> None:
    config = server.config
    try:
        await server.serve()
    except SystemExit:
        # uvicorn has logged why; the line above it is the cause.
        raise StartupFailed(
            f"the HTTP server on {config.host}:{config.port} could not start (see above)"
        ) from None


async def serve_until_signal(engine: Engine, servers: Sequence[uvicorn.Server]) -> None:
    """Run ``servers`` until SIGINT or SIGTERM, then shut them down while the worker drains.

    A second SIGINT skips the servers' graceful wait for open connections.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            for server in servers:
                server.force_exit = True
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    tasks = [asyncio.create_task(_serve(server)) for server in servers]
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for server in servers:
            server.should_exit = True
        # The worker stops claiming and drains while the servers close their connections;
        # the store stays open until both are done, for requests still being answered.
        draining = [engine.worker.stop(DRAIN_SECONDS)] if engine.worker is not None else []
        results = await asyncio.gather(*tasks, *draining, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
    finally:
        stopping.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def run_server(
    *,
    config: str | None,
    db: str,
    host: str = "127.0.0.1",
    port: int = 8787,
    run_worker: bool = True,
    insecure_no_auth: bool = False,
    concurrency: int = 100,
    lease_seconds: float = 30.0,
    data_dir: str | None = None,
    max_running: int | None = None,
    access_log: bool = True,
    worker_host: str | None = None,
    worker_port: int = DEFAULT_WORKER_PORT,
    test_scheduled: bool = False,
    metrics_addr: str | None = None,
    log_format: str = "text",
) -> None:
    """Serve the API (and a worker unless ``run_worker`` is False) until SIGINT/SIGTERM.

    A wrangler project's Worker (its ``main``) is served too, on ``worker_host:worker_port``.
    Raises ``StartupFailed`` when it cannot start (a port in use, say).
    """
    check_port(host, port, "--port")
    metrics_where = prepare_observability(log_format, metrics_addr)

    async def main() -> None:
        engine = await Engine.open(
            db,
            config=config,
            run_worker=run_worker,
            worker_settings=_worker_settings(concurrency, lease_seconds, max_running),
        )
        try:
            settings = await prepare_auth(
                engine, Path(data_dir or DEFAULT_DATA_DIR), insecure_no_auth=insecure_no_auth
            )
            if insecure_no_auth:
                insecure_banner(f"http://{host}:{port}")
            app = build_app(engine, auth=settings, insecure_no_auth=insecure_no_auth)
            root = f"http://{browsable(host)}:{port}"
            worker_text = (
                f"worker {describe_worker(concurrency, max_running)}"
                if run_worker
                else "no worker (--no-worker)"
            )
            up_line = (
                f"Stepstone is up on {root}; dashboard {root}/dashboard;"
                f" store {describe_store(db)}; {await describe_workflows(engine)}; {worker_text}"
            )
            # Event streams (subscribe, the dashboard's live pages) stay open until their
            # instance ends; without a bound, a shutdown would wait for all of them.
            server = _Server(
                uvicorn.Config(
                    app,
                    host=host,
                    port=port,
                    log_level="info",
                    log_config=_log_config(log_format),
                    access_log=access_log,
                    lifespan="on",
                    timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
                ),
                on_started=lambda: announce(up_line),
            )
            servers = [server]
            if metrics_where is not None:
                servers.append(metrics_server(engine, metrics_where, log_format))
            worker_app = None
            if engine.project.main_module is not None:
                check_port(worker_host or host, worker_port, "--worker-port")
                worker_app = WorkerApp(
                    engine.project.main_module,
                    engine.env(),
                    engine.project.crons,
                    test_scheduled=test_scheduled,
                )
                servers.append(
                    _Server(
                        uvicorn.Config(
                            worker_app.asgi,
                            host=worker_host or host,
                            port=worker_port,
                            log_level="info",
                            access_log=access_log,
                            lifespan="off",
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
                        )
                    )
                )
                worker_app.start()
                announce(
                    f"The Worker of {engine.project.source} answers on"
                    f" http://{worker_host or host}:{worker_port}"
                )
            try:
                await serve_until_signal(engine, servers)
            finally:
                if worker_app is not None:
                    await worker_app.stop(DRAIN_SECONDS)
        finally:
            await engine.close(drain_seconds=DRAIN_SECONDS)

    asyncio.run(main())


def run_worker(
    *,
    config: str | None,
    db: str,
    concurrency: int = 100,
    lease_seconds: float = 30.0,
    max_running: int | None = None,
    metrics_addr: str | None = None,
    log_format: str = "text",
) -> None:
    """Run a worker (with no HTTP but ``GET /metrics`` on ``metrics_addr``) until SIGINT/SIGTERM,
    then stop it cleanly; say, in one line, when it is up."""
    metrics_where = prepare_observability(log_format, metrics_addr)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        engine = await Engine.open(
            db,
            config=config,
            run_worker=True,
            worker_settings=_worker_settings(concurrency, lease_seconds, max_running),
        )
        announce(
            f"Stepstone worker is up; store {describe_store(db)};"
            f" {await describe_workflows(engine)}; {describe_worker(concurrency, max_running)};"
            " SIGINT or SIGTERM stops it"
        )
        scraped = None
        if metrics_where is not None:
            scraped = metrics_server(engine, metrics_where, log_format)
        serving = asyncio.create_task(_serve(scraped)) if scraped is not None else None
        try:
            stopping = asyncio.create_task(stop.wait())
            waited = [stopping, *([serving] if serving else [])]
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if scraped is not None and serving is not None:
                scraped.should_exit = True
                await serving
        finally:
            await engine.close(drain_seconds=DRAIN_SECONDS)

    asyncio.run(main())
