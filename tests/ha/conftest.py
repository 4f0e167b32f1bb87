"""Fixtures of the failover tests: a primary/standby pair, worker processes, the API server and
the side-effect log the workers' steps write (``tests.ha.flows``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from stepstone.storage.base import NewInstance
from tests.api.conftest import ACCOUNT, LiveServer, start_server
from tests.ha.flows import STEPS
from tests.ha.pair import Pair, built_pair

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = "ledger"
STEP_NAMES = [f"{name}-1" for name in STEPS]
CONFIG = f"""
account_id = "{ACCOUNT}"

[[workflows]]
name = "{WORKFLOW}"
class_name = "Ledger"
script_name = "tests.ha.flows"
"""


@pytest.fixture
def pair() -> Iterator[Pair]:
    built, drop = built_pair()
    try:
        yield built
    finally:
        drop()


class Workers:
    """``python -m stepstone worker`` processes on the pair's multi-host URL."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        self.folder = folder
        self.config = folder / "stepstone.toml"
        self.config.write_text(CONFIG)
        self.effects = folder / "effects"
        self.effects.mkdir()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int, concurrency: int = 100, lease_seconds: float = 10.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "HA_LOG_DIR": str(self.effects)}
        for _ in range(count):
            out = open(self.folder / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
            command = [sys.executable, "-m", "stepstone", "worker", "--db", self.url]
            command += ["--config", str(self.config), "--concurrency", str(concurrency)]
            command += ["--lease-seconds", str(lease_seconds)]
            self.procs.append(
                subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
            )
            out.close()

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-3000:]}"
            for path in sorted(self.folder.glob("worker-*.log"))
        )

    def tracebacks(self) -> list[str]:
        """The first line after each traceback in the workers' output: an outage is one line
        per episode (issue 11), never a traceback per attempt."""
        found = []
        for path in sorted(self.folder.glob("worker-*.log")):
            lines = path.read_text().splitlines()
            found += [
                next((x for x in lines[n:] if not x.startswith((" ", "Traceback"))), "")
                for n, line in enumerate(lines)
                if line.startswith("Traceback")
            ]
        return found

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(pair: Pair, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(pair.url, tmp_path)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def live(pair: Pair) -> Iterator[LiveServer]:
    """The REST API on the pair's URL, without a worker of its own."""
    server, stop = start_server(pair.url, run_worker=False)
    try:
        yield server
    finally:
        stop()


def create(live: LiveServer, count: int, timeout: float = 60) -> int:
    """Create ``count`` instances once a worker has registered the workflow; its pk."""

    async def go() -> int:
        storage = live.engine.storage
        deadline = time.monotonic() + timeout
        while (record := await storage.get_workflow(ACCOUNT, WORKFLOW)) is None:
            assert time.monotonic() < deadline, "no worker registered the workflow"
            await asyncio.sleep(0.1)
        for start in range(0, count, 250):
            items = [
                NewInstance(f"i{n:05d}", orjson.dumps({"n": n}))
                for n in range(start, min(count, start + 250))
            ]
            await storage.create_instances(
                record.pk, record.version.id, items, int(time.time() * 1000), skip_existing=False
            )
        return record.pk

    return live.run(go(), timeout=timeout + 30)


def counts(live: LiveServer, pk: int) -> dict[str, int]:
    return live.run(live.engine.storage.count_instances(pk), timeout=60)


@dataclass
class Ledger:
    """What the workers' steps wrote: per (instance, step), when each execution of its body
    began and when run() first saw its completion (ns since the epoch)."""

    effects: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    acks: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> Ledger:
        ledger = cls()
        for path in folder.glob("*.log"):
            for line in path.read_text().splitlines():
                ts, kind, instance_id, step = line.split()
                key = (instance_id, step)
                if kind == "effect":
                    ledger.effects[key].append(int(ts))
                elif key not in ledger.acks or int(ts) < ledger.acks[key]:
                    ledger.acks[key] = int(ts)
        return ledger

    def acked_before(self, ns: int) -> set[tuple[str, str]]:
        return {key for key, ts in self.acks.items() if ts < ns}

    def first_ack_after(self, ns: int) -> int | None:
        later = [ts for ts in self.acks.values() if ts > ns]
        return min(later) if later else None

    def ran_after_ack(self) -> list[tuple[str, str]]:
        """Steps whose body began again after their completion had been acknowledged."""
        return [
            key
            for key, starts in self.effects.items()
            if key in self.acks and any(ts > self.acks[key] for ts in starts)
        ]

    def repeated(self) -> int:
        """Executions beyond the first, of any step (legitimate when unacknowledged)."""
        return sum(len(starts) - 1 for starts in self.effects.values())
