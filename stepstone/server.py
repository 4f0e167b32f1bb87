"""``stepstone serve`` and ``stepstone worker``: the API with an in-process worker, or a worker
alone. Both open one ``Engine`` for the life of the process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Generator, Sequence
from pathlib import Path

import uvicorn

from stepstone import auth as tokens
from stepstone.api.app import create_app
from stepstone.api.auth import AuthSettings
from stepstone.cloudflare import DEFAULT_WORKER_PORT
from stepstone.cloudflare.worker_app import WorkerApp
from stepstone.embedded import Engine
from stepstone.engine.worker import WorkerSettings

log = logging.getLogger("stepstone.server")
DEFAULT_DATA_DIR = ".stepstone"
# On SIGTERM (a deploy), steps already running get this long to finish and be recorded.
DRAIN_SECONDS = 10.0
SHUTDOWN_GRACE_SECONDS = 5

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


async def prepare_auth(engine: Engine, data_dir: Path, *, insecure_no_auth: bool) -> AuthSettings:
    """Auth settings from the environment; on a first start, an admin token printed once."""
    settings = AuthSettings.from_env()
    if insecure_no_auth or settings.admin_token is not None:
        return settings
    secret, created = await tokens.ensure_admin_token(engine.storage, data_dir)
    path = data_dir / tokens.ADMIN_TOKEN_FILE
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


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to ``serve_until_signal``.

    uvicorn's own handling re-raises the captured SIGTERM once ``serve()`` returns, which kills
    the process before the engine drains its running steps.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ServerFailed(Exception):
    """A server could not start (uvicorn exits the process on, say, a port in use)."""


async def _serve(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit as exc:
        raise ServerFailed(f"the HTTP server exited with code {exc.code}") from None


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
) -> None:
    """Serve the API (and a worker unless ``run_worker`` is False) until SIGINT/SIGTERM.

    A wrangler project's Worker (its ``main``) is served too, on ``worker_host:worker_port``.
    """

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
                print(_INSECURE_BANNER.format(bind=f"http://{host}:{port}"), file=sys.stderr)
            app = create_app(engine, auth=settings, insecure_no_auth=insecure_no_auth)
            # Event streams (subscribe, the dashboard's live pages) stay open until their
            # instance ends; without a bound, a shutdown would wait for all of them.
            server = _Server(
                uvicorn.Config(
                    app,
                    host=host,
                    port=port,
                    log_level="info",
                    access_log=access_log,
                    lifespan="on",
                    timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
                )
            )
            servers = [server]
            worker_app = None
            if engine.project.main_module is not None:
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
                print(
                    f"The Worker of {engine.project.source} answers on"
                    f" http://{worker_host or host}:{worker_port}",
                    file=sys.stderr,
                    flush=True,
                )
            try:
                await serve_until_signal(engine, servers)
            finally:
                if worker_app is not None:
                    await worker_app.stop(DRAIN_SECONDS)
        finally:
            await engine.close(drain_seconds=DRAIN_SECONDS)

    try:
        asyncio.run(main())
    except ServerFailed as exc:
        # uvicorn has logged why (e.g. the address is in use).
        print(f"stepstone serve: {exc}", file=sys.stderr)
        sys.exit(1)


def run_worker(
    *,
    config: str | None,
    db: str,
    concurrency: int = 100,
    lease_seconds: float = 30.0,
    max_running: int | None = None,
) -> None:
    """Run a worker with no HTTP until SIGINT/SIGTERM, then stop it cleanly."""

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
        log.info("worker running on %s; SIGINT or SIGTERM stops it", db)
        try:
            await stop.wait()
        finally:
            await engine.close(drain_seconds=DRAIN_SECONDS)

    asyncio.run(main())
