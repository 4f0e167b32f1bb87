"""Process commands: ``serve``, ``worker``, ``dev``, ``migrate``, ``version``."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from types import FrameType
from typing import Annotated
from urllib.parse import unquote, urlsplit

import typer

from stepstone.cli import render
from stepstone.cli.client import fail, usage
from stepstone.cloudflare import DEFAULT_WORKER_PORT
from stepstone.cron import InvalidCronError
from stepstone.cron import validate as validate_cron
from stepstone.project import PROJECT_FILES, ProjectConfigError, find_project_file, load_project
from stepstone.storage import InvalidDatabaseURL, open_storage
from stepstone.storage.base import Storage

DB_ENV = "STEPSTONE_DATABASE_URL"
CONFIG_ENV = "STEPSTONE_CONFIG"
DEFAULT_DB = "sqlite:///data/stepstone.db"
# Folders never worth watching: caches, VCS data, virtualenvs, the default data folder.
WATCH_SKIP = {"__pycache__", "node_modules", "data", "venv"}
WATCH_SUFFIXES = (".py", ".toml", ".json", ".jsonc", ".dev.vars")

DbOption = Annotated[
    str,
    typer.Option(
        "--db", envvar=DB_ENV, help="Database URL: sqlite:///path.db, postgresql://host/db."
    ),
]
ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        envvar=CONFIG_ENV,
        help="Project file registering workflows: a wrangler.toml / wrangler.jsonc /"
        f" wrangler.json or a stepstone.toml (default: the first of {', '.join(PROJECT_FILES)}"
        " found in the working directory).",
        show_default=False,
    ),
]
ConcurrencyOption = Annotated[int, typer.Option(min=1, help="Instances one worker runs at once.")]
MaxRunningOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Instances running at once across all workers on this database"
        " (give every worker the same value).",
    ),
]
LeaseOption = Annotated[
    float, typer.Option(min=1.0, help="Seconds a claim lives without a heartbeat.")
]
HostOption = Annotated[str, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]
WorkerHostOption = Annotated[
    str | None,
    typer.Option(help="Address of the project's Worker (its fetch); default: --host."),
]
WorkerPortOption = Annotated[
    int,
    typer.Option(min=1, max=65535, help="Port of the project's Worker (a wrangler main)."),
]
TestScheduledOption = Annotated[
    bool,
    typer.Option(
        "--test-scheduled",
        help="As wrangler dev's flag: GET /__scheduled?cron=... on the Worker's address runs"
        " its scheduled handler.",
    ),
]
MetricsAddrOption = Annotated[
    str | None,
    typer.Option(
        "--metrics-addr",
        help="Also serve GET /metrics, without a token, on this host:port (or port);"
        " see docs/operations.md.",
        show_default=False,
    ),
]
LogFormatOption = Annotated[
    str,
    typer.Option("--log-format", help="text (human-readable) or json (one object a line)."),
]


def check_observability(metrics_addr: str | None, log_format: str) -> None:
    from stepstone.observability.http import parse_addr
    from stepstone.observability.logs import LOG_FORMATS

    if log_format not in LOG_FORMATS:
        usage(f"{log_format!r} is not one of {', '.join(LOG_FORMATS)}", "--log-format")
    if metrics_addr is not None:
        try:
            parse_addr(metrics_addr)
        except ValueError as exc:
            usage(str(exc), "--metrics-addr")


def resolve_config(config: str | None) -> str | None:
    """The given project file, checked now so a typo fails before the server starts."""
    if config is None:
        found = find_project_file(Path.cwd())
        if found is None:
            return None
        config = str(found)
    try:
        project = load_project(config)
    except ProjectConfigError as exc:
        fail(str(exc), 2)
    for workflow in project.workflows:
        for cron in workflow.schedules:
            try:
                validate_cron(cron)
            except InvalidCronError as exc:
                fail(f"{config}: workflow {workflow.name!r}: {exc}", 2)
    for cron in project.crons:
        try:
            validate_cron(cron)
        except InvalidCronError as exc:
            fail(f"{config}: triggers.crons: {exc}", 2)
    return config


def check_db(db: str) -> str:
    try:
        open_storage(db)
    except InvalidDatabaseURL as exc:
        usage(str(exc), "--db")
    return db


async def open_store(db: str) -> Storage:
    storage = open_storage(check_db(db))
    await storage.open()
    return storage


def sqlite_file(db: str) -> Path | None:
    """The file a ``sqlite://`` URL names (relative to the working directory, as the store
    opens it); None for any other store."""
    parts = urlsplit(db)
    if parts.scheme.lower() != "sqlite":
        return None
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return None if path in ("", ":memory:") else Path(unquote(path))


def describe_store(db: str) -> str:
    """The store as messages name it; a relative SQLite file with its full path, so that
    commands run in another folder can be pointed at the same one."""
    file = sqlite_file(db)
    if file is not None and not file.is_absolute():
        return f"{redact(db)} ({file.resolve()})"
    return redact(db)


def explain_open_failure(db: str, exc: BaseException) -> str | None:
    """Why the store at ``db`` could not be opened and what to do, in one line; None when
    ``exc`` is not a failure to open it (then it is a bug, and its traceback is wanted)."""
    import sqlite3

    import asyncpg

    where = redact(db)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        parts = urlsplit(db)
        name = unquote(parts.path.lstrip("/")) or "postgres"
        flags = f"-h {parts.hostname or 'localhost'} -p {parts.port or 5432}"
        if parts.username:
            flags += f" -U {unquote(parts.username)}"
        return (
            f"PostgreSQL has no database {name!r} ({where}); create it with"
            f" `createdb {flags} {name}` (or CREATE DATABASE in psql), then start again"
        )
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"PostgreSQL refused {where}: {exc}; check the user and password in --db"
    if isinstance(exc, asyncpg.PostgresError):
        return f"PostgreSQL could not open the store {where}: {exc}"
    if sqlite_file(db) is not None and isinstance(exc, OSError | sqlite3.Error):
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"cannot open the SQLite database {where}: {reason}"
    return None


@contextmanager
def explained_startup(db: str, *known: type[Exception]) -> Iterator[None]:
    """Turn a store that cannot be opened, or one of the ``known`` start-up failures (their
    message is the explanation), into one line and exit 1, never a traceback."""
    try:
        yield
    except Exception as exc:
        message = str(exc) if isinstance(exc, known) else explain_open_failure(db, exc)
        if message is None:
            raise
        fail(message)


def redact(url: str) -> str:
    """A database URL safe to print: the password hidden."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    auth, _, host = rest.rpartition("@")
    user = auth.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in auth else url


def serve(
    config: ConfigOption = None,
    db: DbOption = DEFAULT_DB,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8787,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Serve the API only; run workers apart.")
    ] = False,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="Accept requests without a token.")
    ] = False,
    concurrency: ConcurrencyOption = 100,
    max_running: MaxRunningOption = None,
    lease_seconds: LeaseOption = 30.0,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for server state such as the admin token.", file_okay=False),
    ] = None,
    no_access_log: Annotated[
        bool,
        typer.Option(
            "--no-access-log", help="Log no line per request (about 80 us less CPU each)."
        ),
    ] = False,
    worker_host: WorkerHostOption = None,
    worker_port: WorkerPortOption = DEFAULT_WORKER_PORT,
    test_scheduled: TestScheduledOption = False,
    metrics_addr: MetricsAddrOption = None,
    log_format: LogFormatOption = "text",
) -> None:
    """Run the REST API server (and, unless --no-worker, a worker in the same process).

    A wrangler project's Worker (its fetch and scheduled handlers) runs too, on --worker-port.
    """
    config = resolve_config(config)
    check_db(db)
    check_observability(metrics_addr, log_format)
    from stepstone.server import StartupFailed, run_server

    with explained_startup(db, StartupFailed):
        run_server(
            config=config,
            db=db,
            host=host,
            port=port,
            run_worker=not no_worker,
            insecure_no_auth=insecure_no_auth,
            concurrency=concurrency,
            max_running=max_running,
            lease_seconds=lease_seconds,
            data_dir=None if data_dir is None else str(data_dir),
            access_log=not no_access_log,
            worker_host=worker_host,
            worker_port=worker_port,
            test_scheduled=test_scheduled,
            metrics_addr=metrics_addr,
            log_format=log_format,
        )


def worker(
    config: ConfigOption = None,
    db: DbOption = DEFAULT_DB,
    concurrency: ConcurrencyOption = 100,
    max_running: MaxRunningOption = None,
    lease_seconds: LeaseOption = 30.0,
    metrics_addr: MetricsAddrOption = None,
    log_format: LogFormatOption = "text",
) -> None:
    """Run a worker: executes instances, fires cron schedules, sweeps expired instances."""
    config = resolve_config(config)
    check_db(db)
    check_observability(metrics_addr, log_format)
    from stepstone.server import StartupFailed, run_worker

    with explained_startup(db, StartupFailed):
        run_worker(
            config=config,
            db=db,
            concurrency=concurrency,
            max_running=max_running,
            lease_seconds=lease_seconds,
            metrics_addr=metrics_addr,
            log_format=log_format,
        )


def migrate(db: DbOption = DEFAULT_DB) -> None:
    """Create the database schema or bring it up to date."""

    async def main() -> None:
        storage = await open_store(db)
        await storage.close()

    with explained_startup(db):
        asyncio.run(main())
    render.info(f"Database {redact(db)} is up to date")


def show_version() -> None:
    """Print Stepstone's version."""
    try:
        number = package_version("stepstone")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        number = "unknown"
    render.info(f"stepstone {number}")


# --- dev: serve, and restart on code changes ------------------------------------------------


def snapshot(roots: list[Path]) -> dict[str, int]:
    """Modification times of the Python and TOML files under ``roots``."""
    seen: dict[str, int] = {}
    for root in roots:
        if root.is_file():
            seen[str(root)] = root.stat().st_mtime_ns
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in WATCH_SKIP]
            for file in files:
                if file.endswith(WATCH_SUFFIXES):
                    path = os.path.join(folder, file)
                    try:
                        seen[path] = os.stat(path).st_mtime_ns
                    except FileNotFoundError:
                        continue
    return seen


def changed(before: dict[str, int], after: dict[str, int]) -> list[str]:
    paths = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    return sorted(paths)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def dev(
    config: ConfigOption = None,
    db: DbOption = DEFAULT_DB,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8787,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth/--no-auth",
            help="Require API tokens (default: off on a loopback address, on otherwise).",
            show_default=False,
        ),
    ] = False,
    concurrency: ConcurrencyOption = 100,
    watch: Annotated[
        list[Path] | None,
        typer.Option(help="Folders or files to watch (default: the project's folder)."),
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", "-i", min=0.05, help="Seconds between looks.")
    ] = 0.5,
    worker_host: WorkerHostOption = None,
    worker_port: WorkerPortOption = DEFAULT_WORKER_PORT,
    test_scheduled: TestScheduledOption = False,
) -> None:
    """Serve API and worker, restarting them when a workflow module or the config changes."""
    config = resolve_config(config)
    check_db(db)
    insecure = not auth and is_loopback(host)
    roots = list(watch or [Path(config).resolve().parent if config else Path.cwd()])
    command = [sys.executable, "-m", "stepstone", "serve", "--db", db]
    command += ["--host", host, "--port", str(port), "--concurrency", str(concurrency)]
    command += ["--worker-port", str(worker_port)]
    if worker_host:
        command += ["--worker-host", worker_host]
    if test_scheduled:
        command.append("--test-scheduled")
    if config:
        command += ["--config", config]
    if insecure:
        command.append("--insecure-no-auth")

    def stop_on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)
    render.err_console.print(
        f"[bold]stepstone dev[/] on http://{host}:{port}"
        f"{' (no auth)' if insecure else ''}; watching {', '.join(map(str, roots))}"
    )
    proc: subprocess.Popen[bytes] | None = None
    try:
        while True:
            state = snapshot(roots)
            proc = subprocess.Popen(command)
            reported_exit = False
            while True:
                time.sleep(interval)
                if proc.poll() is not None and not reported_exit:
                    reported_exit = True
                    render.warn(
                        f"the server exited with code {proc.returncode};"
                        " waiting for a change to start it again"
                    )
                latest = snapshot(roots)
                diff = changed(state, latest)
                if diff:
                    render.err_console.print(
                        f"[yellow]changed:[/] {', '.join(diff[:3])}"
                        f"{' …' if len(diff) > 3 else ''}; restarting"
                    )
                    _stop(proc)
                    break
    except KeyboardInterrupt:
        pass
    finally:
        if proc is not None:
            _stop(proc)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(worker)
    app.command()(dev)
    app.command()(migrate)
    app.command("version")(show_version)
