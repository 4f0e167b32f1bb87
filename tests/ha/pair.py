"""A PostgreSQL primary and its synchronous standby on local ports, for the failover tests.

Both are clusters of their own (``pg_createcluster``), never the shared one on 5432. The
standby is a ``pg_basebackup`` of the primary and streams from it through ``LinkProxy``, a TCP
relay in this process, so a test can cut the network between them without root. The primary
names the standby in ``synchronous_standby_names``: a commit is acknowledged only once the
standby has flushed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

VERSION = "15"
BIN = Path(f"/usr/lib/postgresql/{VERSION}/bin")
STANDBY_NAME = "standby1"
SYNC_FIRST = f"FIRST 1 ({STANDBY_NAME})"

needs_clusters = pytest.mark.skipif(
    shutil.which("pg_createcluster") is None or not (BIN / "pg_basebackup").exists(),
    reason="needs postgresql-common's pg_createcluster and PostgreSQL 15's pg_basebackup",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, check=False, capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _as_postgres(*args: str) -> None:
    _run("runuser", "-u", "postgres", "--", *args)


class LinkProxy:
    """Relays TCP from ``port`` to ``target`` on a loop of its own (its own thread, so it keeps
    relaying while the test blocks). ``cut()`` stops forwarding without closing anything, as a
    failed link does: the two ends hear nothing and notice only by their own timeouts.
    ``heal()`` lets the held bytes through."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="link-proxy")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the link proxy did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._open.set()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", self.port)
        )
        self._started.set()
        self._loop.run_forever()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._open.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._open.wait()
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            sink.close()

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._open.clear)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def close(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class Node:
    """One cluster made with ``pg_createcluster``."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.data = Path(f"/var/lib/postgresql/{VERSION}/{name}")
        self.conf = Path(f"/etc/postgresql/{VERSION}/{name}")
        self.killed_shm: list[str] = []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create(self, settings: dict[str, str]) -> None:
        _run(
            *("pg_createcluster", VERSION, self.name, "-p", str(self.port)),
            *("--", "--auth=trust", "--no-sync"),
        )
        self.configure(settings)

    def configure(self, settings: dict[str, str]) -> None:
        lines = [f"{key} = '{value}'" for key, value in settings.items()]
        (self.conf / "conf.d" / "stepstone_ha.conf").write_text("\n".join(lines) + "\n")

    def ctl(self, *args: str) -> None:
        _run("pg_ctlcluster", VERSION, self.name, *args)

    def sql(self, statement: str) -> str:
        done = _run(
            str(BIN / "psql"),
            *("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres"),
            *("-AtX", "-c", statement),
        )
        return done.stdout.strip()

    def kill(self) -> None:
        """SIGKILL the postmaster and every process it started, as losing the machine would:
        nothing shuts down, nothing more is sent."""
        lines = (self.data / "postmaster.pid").read_text().splitlines()
        postmaster = int(lines[0])
        children = [pid for pid in _pids() if _parent(pid) == postmaster]
        for pid in (postmaster, *children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # The System V segment outlives its processes; drop it once they are gone.
        if len(lines) > 6 and len(lines[6].split()) == 2:
            self.killed_shm.append(lines[6].split()[1])
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in (postmaster, *children)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not die")
            time.sleep(0.01)

    def drop(self) -> None:
        _run("pg_dropcluster", VERSION, self.name, "--stop", check=False)
        for shmid in self.killed_shm:
            _run("ipcrm", "-m", shmid, check=False)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


def _parent(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def cpu_seconds(node: Node) -> float:
    """User + system CPU of a cluster's live processes (the postmaster and its children)."""
    postmaster = int((node.data / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _pids():
        fields = _stat(pid)
        if fields and (pid == postmaster or int(fields[1]) == postmaster):
            total += int(fields[11]) + int(fields[12])
    return total / tick


def process_cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


class Pair:
    """A primary, a standby streaming from it through a proxy, and the URL naming both."""

    def __init__(self, policy: str = SYNC_FIRST) -> None:
        base = free_port()
        self.primary = Node(f"stepstone_ha_p{base}", base)
        self.standby = Node(f"stepstone_ha_s{base}", free_port())
        self.link: LinkProxy | None = None
        self.policy = policy

    @property
    def url(self) -> str:
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def build(self) -> None:
        # fsync off: nothing here loses the machine, only processes, and the OS keeps what
        # they wrote; the test is about what the standby has, not about this disk.
        common = {"fsync": "off", "shared_buffers": "64MB", "max_connections": "200"}
        self.primary.create(
            {
                **common,
                "synchronous_standby_names": self.policy,
                "synchronous_commit": "on",
                "wal_keep_size": "512MB",
            }
        )
        self.primary.ctl("start")
        self.link = LinkProxy(self.primary.port)
        self.standby.create(
            {
                **common,
                "primary_conninfo": (
                    f"host=127.0.0.1 port={self.link.port} user=postgres"
                    f" application_name={STANDBY_NAME}"
                ),
                # Notice a silent link within seconds, not the default minute.
                "wal_receiver_timeout": "5s",
            }
        )
        # Emptied, not removed: its parent belongs to root.
        for entry in self.standby.data.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        _as_postgres(
            str(BIN / "pg_basebackup"),
            *("-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres"),
            *("-D", str(self.standby.data), "-X", "stream", "-c", "fast"),
        )
        (self.standby.data / "standby.signal").touch()
        shutil.chown(self.standby.data / "standby.signal", "postgres", "postgres")
        self.standby.ctl("start")
        self.wait_streaming()

    def wait_streaming(self, timeout: float = 30) -> None:
        """Until the standby streams, and is the synchronous one if the policy names it."""
        deadline = time.monotonic() + timeout
        states = "'sync', 'quorum'" if self.policy else "'async'"
        query = (
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            f" AND application_name = '{STANDBY_NAME}' AND sync_state IN ({states})"
        )
        while self.primary.sql(query) == "0":
            if time.monotonic() > deadline:
                raise RuntimeError("the standby did not start streaming synchronously")
            time.sleep(0.1)

    def promote(self) -> None:
        self.standby.ctl("promote")

    def set_policy(self, policy: str) -> None:
        """What an operator does to let commits go on without the standby (or to stop that)."""
        self.primary.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{policy}'")
        self.primary.sql("SELECT pg_reload_conf()")
        self.policy = policy

    def drop(self) -> None:
        if self.link is not None:
            self.link.close()
        self.standby.drop()
        self.primary.drop()


def built_pair(policy: str = SYNC_FIRST) -> tuple[Pair, Callable[[], None]]:
    pair = Pair(policy)
    try:
        pair.build()
    except BaseException:
        pair.drop()
        raise
    return pair, pair.drop
