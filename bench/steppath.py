"""The durable step's CPU path: W1 per step on two source trees, beside the fdatasync floor.

Interleaved A/B, so that the load other processes put on the machine falls on both sides::

    .venv/bin/python bench/steppath.py --tree base=/tmp/base --tree head=. --rounds 5

Each round runs, in a shuffled order and each in a fresh process: ``sqlite_floor.py``'s WAL +
FULL loop (one INSERT, COMMIT and fdatasync per commit, 1,000 commits: the floor), and for every
tree W1 (one workflow of ``--n`` sequential no-op steps) embedded on SQLite FULL and on NORMAL
(NORMAL is the CPU path alone: no sync). A tree is imported by putting it first on the child's
``sys.path``, so a worktree of an older commit is measured with its own engine and storage.
Per W1 run: wall and CPU (process time, all threads) per step, and the WAL fdatasyncs per step.
Prints one JSON line per run, then the medians and the per-round FULL/floor ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def child_floor(n: int) -> dict[str, Any]:
    import tempfile

    from bench.sqlite_floor import run_one  # type: ignore[attr-defined]

    d = tempfile.mkdtemp(prefix="steppath_floor_")
    try:
        row = run_one(d, "wal_full", "WAL", "FULL", False, n)
    finally:
        import shutil

        shutil.rmtree(d, ignore_errors=True)
    return {"us_per_step": row["us_per_commit"], "p50_us": row["p50_us"]}


def child_w1(n: int, sync: str) -> dict[str, Any]:
    import asyncio
    import shutil
    import tempfile
    import time

    syncs = [0]
    real = os.fdatasync

    def counted(fd: int) -> None:
        syncs[0] += 1
        real(fd)

    os.fdatasync = counted  # the WAL syncer calls os.fdatasync by attribute

    import stepstone
    from bench.stepstone_bench import Completions, register_all, run_to_end
    from stepstone import Engine

    async def main() -> dict[str, Any]:
        d = tempfile.mkdtemp(prefix="steppath_w1_")
        try:
            engine = await Engine.open(f"sqlite:///{d}/stepstone.db?synchronous={sync}")
            try:
                await register_all(engine)
                done = Completions(engine)
                await run_to_end(engine, done, "seq", {"n": 20})  # warm-up
                s0, c0, t0 = syncs[0], time.process_time(), time.perf_counter()
                await run_to_end(engine, done, "seq", {"n": n})
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                fsyncs = syncs[0] - s0
            finally:
                await engine.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)
        return {
            "us_per_step": round(wall / n * 1e6, 1),
            "cpu_us_per_step": round(cpu / n * 1e6, 1),
            "fsyncs_per_step": round(fsyncs / n, 3),
            "stepstone": str(Path(stepstone.__file__).parent.parent),
        }

    return asyncio.run(main())


def run_child(tree: Path, args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(HERE), "--child", *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", default=[], help="label=path (repeatable)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        kind, *rest = args.child
        result = child_floor(int(rest[0])) if kind == "floor" else child_w1(int(rest[0]), rest[1])
        print(json.dumps(result), flush=True)
        return 0
    trees = {}
    for spec in args.tree or [f"head={HERE.parent.parent}"]:
        label, _, path = spec.partition("=")
        trees[label] = Path(path).resolve()
    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        cells: list[tuple[str, str]] = [("floor", "")]
        cells += [(label, sync) for label in trees for sync in ("FULL", "NORMAL")]
        rng.shuffle(cells)
        load = os.getloadavg()[0]
        for label, sync in cells:
            if label == "floor":
                row = run_child(HERE.parent.parent, ["floor", "1000"])
            else:
                row = run_child(trees[label], ["w1", str(args.n), sync])
            row = {"round": rnd, "cell": label, "sync": sync, "load1": load, **row}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary: dict[str, Any] = {"rounds": args.rounds, "n": args.n}
    floors = {r["round"]: r["us_per_step"] for r in rows if r["cell"] == "floor"}
    summary["floor_us"] = median(list(floors.values()))
    for label in trees:
        for sync in ("FULL", "NORMAL"):
            mine = [r for r in rows if r["cell"] == label and r["sync"] == sync]
            key = f"{label}_{sync.lower()}"
            summary[key + "_us"] = median([r["us_per_step"] for r in mine])
            summary[key + "_cpu_us"] = median([r["cpu_us_per_step"] for r in mine])
            if sync == "FULL":
                summary[key + "_fsyncs"] = median([r["fsyncs_per_step"] for r in mine])
                ratios = [r["us_per_step"] / floors[r["round"]] for r in mine]
                summary[key + "_over_floor"] = {
                    "median": round(statistics.median(ratios), 2),
                    "min": round(min(ratios), 2),
                    "max": round(max(ratios), 2),
                }
    labels = list(trees)
    if len(labels) == 2:
        a, b = labels
        for sync in ("FULL", "NORMAL"):
            per_round = []
            for rnd in range(args.rounds):
                pair = {
                    r["cell"]: r["us_per_step"]
                    for r in rows
                    if r["round"] == rnd and r["sync"] == sync and r["cell"] in (a, b)
                }
                per_round.append(pair[b] / pair[a])
            summary[f"{b}_over_{a}_{sync.lower()}"] = round(statistics.median(per_round), 3)
    print(json.dumps({"summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
