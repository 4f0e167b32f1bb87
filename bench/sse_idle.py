"""What idle event-stream subscribers cost the server: its CPU over a quiet interval.

Starts ``stepstone serve`` (``stepstone.server.run_server``: API and worker in one process) on a
fresh store, creates a few instances that wait for an event (so their streams stay open and
nothing happens on them), opens ``--subscribers`` SSE connections spread over them, lets them
settle (history sent), and then reads the server process's user+system CPU time from /proc over
``--seconds``. The subscribers are plain sockets in this process, which reads whatever arrives
(heartbeats) and counts it, so the server's figure holds no client work.

    .venv/bin/python -m bench.sse_idle                  # SQLite, 1,000 subscribers, 10 s
    .venv/bin/python -m bench.sse_idle --backend postgres --pg-url postgresql://...

Prints one JSON line: server CPU seconds over the interval, the same per second (the share of
one core), and how many bytes and frames the subscribers received meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from stepstone import WorkflowEntrypoint

SERVER_CODE = (
    "import sys\n"
    "from stepstone.server import run_server\n"
    "run_server(config=None, db=sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]),"
    " data_dir=sys.argv[3], access_log=False)\n"
)
# The server imports this module's workflow as ``bench.sse_idle``.
ROOT = Path(__file__).resolve().parent.parent


class Idle(WorkflowEntrypoint):
    """Waits an hour for a ``go`` event: a stream that stays open with nothing to send."""

    async def run(self, event: Any, step: Any) -> Any:
        got = await step.wait_for_event("wait", "go", timeout="1 hour")
        return got["payload"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Subscriber:
    """One SSE connection over a raw socket: the request, then counting what arrives."""

    def __init__(self) -> None:
        self.bytes = 0
        self.frames = 0
        self.status = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, port: int, path: str, token: str) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n"
            "accept: text/event-stream\r\n\r\n".encode()
        )
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])

    async def read(self) -> None:
        assert self.reader is not None
        while chunk := await self.reader.read(65536):
            self.bytes += len(chunk)
            self.frames += chunk.count(b"\n\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def wait_until_up(base: str) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=5) as http, asyncio.timeout(60):
        while True:
            try:
                if (await http.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


async def measure(args: argparse.Namespace, db: str) -> dict[str, Any]:
    import httpx

    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="stepstone_sse_idle_")
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
        [sys.executable, "-c", SERVER_CODE, db, str(port), data_dir],
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("SSE_IDLE_DEBUG") else subprocess.DEVNULL,
        cwd=ROOT,
    )
    subscribers: list[Subscriber] = []
    readers: list[asyncio.Task[None]] = []
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_until_up(base)
        token = (Path(data_dir) / "admin-token").read_text().strip()
        prefix = "/client/v4/accounts/default/workflows/idle"
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            put = await http.put(
                prefix, json={"class_name": "Idle", "script_name": "bench.sse_idle"}
            )
            put.raise_for_status()
            ids = [f"idle-{n}" for n in range(args.instances)]
            for instance_id in ids:
                (
                    await http.post(f"{prefix}/instances", json={"instance_id": instance_id})
                ).raise_for_status()
            async with asyncio.timeout(60):
                for instance_id in ids:
                    while (await http.get(f"{prefix}/instances/{instance_id}")).json()["result"][
                        "status"
                    ] != "waiting":
                        await asyncio.sleep(0.05)
        for n in range(args.subscribers):
            sub = Subscriber()
            await sub.open(port, f"{prefix}/instances/{ids[n % len(ids)]}/subscribe", token)
            if sub.status != 200:
                raise RuntimeError(f"subscriber {n}: HTTP {sub.status}")
            subscribers.append(sub)
            readers.append(asyncio.create_task(sub.read()))
        await asyncio.sleep(args.settle)  # the history is sent; from here on nothing happens
        bytes_before = sum(s.bytes for s in subscribers)
        frames_before = sum(s.frames for s in subscribers)
        cpu_before, t0 = cpu_seconds(server.pid), time.perf_counter()
        await asyncio.sleep(args.seconds)
        cpu = cpu_seconds(server.pid) - cpu_before
        elapsed = time.perf_counter() - t0
        alive = sum(1 for task in readers if not task.done())
        return {
            "bench": "sse_idle",
            "backend": args.backend,
            "subscribers": args.subscribers,
            "open_at_end": alive,
            "instances": args.instances,
            "seconds": round(elapsed, 2),
            "server_cpu_s": round(cpu, 3),
            "server_cpu_share_of_a_core": round(cpu / elapsed, 4),
            "bytes_received": sum(s.bytes for s in subscribers) - bytes_before,
            "frames_received": sum(s.frames for s in subscribers) - frames_before,
        }
    finally:
        for task in readers:
            task.cancel()
        for sub in subscribers:
            sub.close()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    if args.backend == "sqlite":
        db = f"sqlite:///{tempfile.mkdtemp(prefix='stepstone_sse_idle_db_')}/sse.db"
        print(json.dumps(await measure(args, db)), flush=True)
        return
    import asyncpg

    name = f"sse_idle_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        db = args.pg_url.rsplit("/", 1)[0] + f"/{name}"
        print(json.dumps(await measure(args, db)), flush=True)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
