"""Profile Stepstone's hot paths with py-spy (installed into the DBOS venv, not the project).

    .venv/bin/python bench/profile.py                 # 3,000-step workflow, SQLite FULL
    .venv/bin/python bench/profile.py --workload lat  # 1-step create-to-complete, 1,000 times
    .venv/bin/python bench/profile.py --backend sqlite_normal --top 30

Records every thread (the event loop and the WAL syncer) at 1 kHz, then prints the functions
with the most samples, self (the line the sample was in) and inclusive. Samples in
``WalSyncer._run``'s ``queue.get`` and in ``EpollSelector.select`` are idle waiting.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import peer  # noqa: E402

WORKLOADS = {
    "seq": ["--n", "3000", "--w", "1", "--lat-runs", "1"],
    "lat": ["--n", "1", "--w", "1", "--lat-runs", "1000"],
    "tput": ["--n", "1", "--w", "2000", "--lat-runs", "1"],
}


def summarize(raw: Path, top: int) -> str:
    self_line: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        self_line[frames[-1]] += n
        for name in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            inclusive[name] += n
    out = [f"{total} samples", "", "self (innermost line):"]
    out += [f"  {100 * v / total:5.1f}%  {k}" for k, v in self_line.most_common(top)]
    out += ["", "inclusive (function on the stack):"]
    out += [f"  {100 * v / total:5.1f}%  {k}" for k, v in inclusive.most_common(top + 15)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="seq")
    ap.add_argument("--backend", default="sqlite_full")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--venv", default=str(peer.DBOS_VENV))
    ap.add_argument("--out", help="keep the raw py-spy output here")
    args = ap.parse_args()
    env = peer.PeerEnv(Path(args.venv))
    env.ensure(extra=["py-spy"], log=lambda m: print(m, file=sys.stderr))
    raw = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "profile.txt"
    cmd = [
        str(env.venv / "bin" / "py-spy"), "record", "--rate", str(args.rate),
        "--format", "raw", "--output", str(raw), "--",
        sys.executable, "-m", "bench.stepstone_bench", "--backend", args.backend,
        *WORKLOADS[args.workload],
    ]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, check=True)
    print(summarize(raw, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
