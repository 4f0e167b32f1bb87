"""What every peer harness shares: the workload sizes, statistics and a lean HTTP client.

Standard library only, so each peer's own venv (Restate's, Absurd's) can import it; Stepstone's
own harnesses import it too. The sizes are the ones every system runs (W1, W2, W3); the
harnesses take them as flags, these are the defaults.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
from typing import Any

N_STEPS = 1000  # W1: one workflow of N sequential no-op steps, reported per step
W_WORKFLOWS = 500  # W2: W workflows of 3 no-op steps, all started at once
LAT_RUNS = 200  # W3: a 1-step workflow, create to complete, L times in sequence
EMPTY_REPS = 20  # W1 also times an empty workflow (the median of these)
WARMUP = 5


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def pct(sorted_vals: list[float], p: float) -> float:
    k = min(len(sorted_vals) - 1, max(0, round(p / 100.0 * (len(sorted_vals) - 1))))
    return sorted_vals[k]


def lat_stats(samples_s: list[float]) -> dict[str, float]:
    s = sorted(samples_s)
    return {
        "p50_ms": round(pct(s, 50) * 1e3, 3),
        "p90_ms": round(pct(s, 90) * 1e3, 3),
        "p99_ms": round(pct(s, 99) * 1e3, 3),
        "mean_ms": round(statistics.fmean(s) * 1e3, 3),
        "max_ms": round(s[-1] * 1e3, 3),
    }


def seq_result(n: int, seconds: float, empty_s: float) -> dict[str, Any]:
    return {
        "n_steps": n,
        "seconds": round(seconds, 4),
        "us_per_step": round(seconds / n * 1e6, 1),
        "us_per_step_marginal": round((seconds - empty_s) / n * 1e6, 1),
        "empty_wf_ms": round(empty_s * 1e3, 3),
    }


def tput_result(w: int, seconds: float, start_phase_s: float) -> dict[str, Any]:
    return {
        "workflows": w,
        "steps_per_wf": 3,
        "seconds": round(seconds, 4),
        "wf_per_s": round(w / seconds, 1),
        "start_phase_s": round(start_phase_s, 4),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def median_s(samples: list[float]) -> float:
    return sorted(samples)[len(samples) // 2]


class HttpPool:
    """A keep-alive HTTP/1.1 client on asyncio streams, for both HTTP peers.

    httpx costs 4-12 ms of client CPU per request once a few hundred requests are in flight
    (500 concurrent calls cost 5-7 s of client CPU on the 2-core bench machine), which would
    measure the client rather than the systems. Both HTTP harnesses (Stepstone's API,
    Restate's ingress) use this instead, so neither is favoured by its client.
    """

    def __init__(
        self, host: str, port: int, size: int, headers: dict[str, str] | None = None
    ) -> None:
        self.host, self.port, self.size = host, port, size
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.opened = 0

    async def _conn(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle.empty() and self.opened < self.size:
            self.opened += 1
            try:
                return await asyncio.open_connection(self.host, self.port)
            except BaseException:
                self.opened -= 1
                raise
        return await self.idle.get()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = b"" if body is None else json.dumps(body).encode()
        typed = (
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n"
            if body is not None
            else ""
        )
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"{self.headers}{typed}\r\n"
        ).encode()
        reader, writer = await self._conn()
        try:
            writer.write(head + data)
            status = int((await reader.readuntil(b"\r\n")).split()[1])
            length, chunked, close = None, False, False
            while True:
                line = await reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding" and "chunked" in value:
                    chunked = True
                elif name == "connection" and value == "close":
                    close = True
            if chunked:
                parts = []
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        break
                    parts.append(await reader.readexactly(size))
                    await reader.readexactly(2)
                payload = b"".join(parts)
            else:
                payload = await reader.readexactly(length or 0)
        except BaseException:
            writer.close()
            self.opened -= 1
            raise
        if close:
            writer.close()
            self.opened -= 1
        else:
            self.idle.put_nowait((reader, writer))
        return status, payload

    async def json(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = await self.request(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {payload[:300]!r}")
        return json.loads(payload) if payload else None

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()
