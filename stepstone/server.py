"""``stepstone serve`` and ``stepstone worker``: the API with an in-process worker, or a worker
alone. Both open one ``Engine`` for the life of the process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import uvicorn

from stepstone import auth as tokens
from stepstone.api.app import create_app
from stepstone.api.auth import AuthSettings
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
) -> None:
    """Serve the API (and a worker unless ``run_worker`` is False) until SIGINT/SIGTERM."""

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
            server = uvicorn.Server(
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
            await server.serve()
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
