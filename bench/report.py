"""Medians over runs, Stepstone/DBOS ratios, the console table and docs/performance.md."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Hand-written reading of the figures and profiles, appended to docs/performance.md.
ANALYSIS = Path(__file__).resolve().parent / "analysis.md"

# (key in the summary, bench row, field, label, higher is better)
FIGURES = [
    ("us_per_step", "seq", "us_per_step", "1,000-step workflow: us/step", False),
    ("us_per_step_marginal", "seq", "us_per_step_marginal", "  marginal us/step (- empty)", False),
    ("empty_wf_ms", "seq", "empty_wf_ms", "empty workflow ms", False),
    ("tput_wf_per_s", "tput_start", "wf_per_s", "500 x 3-step: workflows/s", True),
    ("lat_p50_ms", "lat_start", "p50_ms", "1-step create-to-complete p50 ms", False),
    ("lat_p99_ms", "lat_start", "p99_ms", "1-step create-to-complete p99 ms", False),
]

# Comparisons: (id, title, Stepstone backend, DBOS config, durability note)
COMPARISONS = [
    (
        "sqlite_full",
        "SQLite, synchronous=FULL",
        "sqlite_full",
        "sqlite:default",
        "Stepstone WAL + synchronous=FULL; DBOS its default: journal DELETE + synchronous=FULL",
    ),
    (
        "sqlite_full_wal",
        "SQLite, synchronous=FULL, both WAL",
        "sqlite_full",
        "sqlite:wal_full",
        "both WAL + synchronous=FULL (DBOS pragmas set by bench/dbos_pragmas.py)",
    ),
    (
        "sqlite_normal",
        "SQLite, synchronous=NORMAL",
        "sqlite_normal",
        "sqlite:wal_normal",
        "both WAL + synchronous=NORMAL (DBOS pragmas set by bench/dbos_pragmas.py)",
    ),
    (
        "postgres",
        "PostgreSQL 15",
        "postgres",
        "postgres",
        "both synchronous_commit=on (server default), loopback TCP",
    ),
]


def median_of(rows: Iterable[dict[str, Any]], bench: str, field: str) -> float | None:
    values = [r[field] for r in rows if r.get("bench") == bench and field in r]
    return round(statistics.median(values), 3) if values else None


def summarize(
    stepstone: dict[str, list[dict[str, Any]]],
    dbos: dict[str, list[dict[str, Any]]],
    skipped_stepstone: dict[str, str],
    skipped_dbos: dict[str, str],
) -> dict[str, Any]:
    """Per comparison and figure: both medians, Stepstone/DBOS and how many times better."""
    out: dict[str, Any] = {}
    for cid, title, s_key, d_key, note in COMPARISONS:
        s_rows, d_rows = stepstone.get(s_key, []), dbos.get(d_key, [])
        if not s_rows and not d_rows and s_key not in skipped_stepstone:
            continue
        entry: dict[str, Any] = {
            "title": title,
            "durability": note,
            "stepstone_backend": s_key,
            "dbos_config": d_key,
            "runs": {
                "stepstone": len({r.get("run") for r in s_rows if r.get("bench") == "seq"}),
                "dbos": len({r.get("run") for r in d_rows if r.get("bench") == "seq"}),
            },
            "figures": {},
        }
        if s_key in skipped_stepstone:
            entry["stepstone_skipped"] = skipped_stepstone[s_key]
        if d_key in skipped_dbos:
            entry["dbos_skipped"] = skipped_dbos[d_key]
        for key, bench, field, label, higher_better in FIGURES:
            s = median_of(s_rows, bench, field)
            d = median_of(d_rows, bench, field)
            ratio = round(s / d, 4) if s is not None and d else None
            better = None
            if s and d:
                better = round(s / d if higher_better else d / s, 2)
            runs = sorted({r["run"] for r in s_rows if "run" in r})
            per_round = []
            for run in runs:
                a, b = _value(s_rows, run, bench, field), _value(d_rows, run, bench, field)
                if a is not None and b:
                    per_round.append(a / b)
            entry["figures"][key] = {
                "label": label,
                "stepstone": s,
                "dbos": d,
                "ratio_stepstone_over_dbos": ratio,
                "ratio_per_round": _spread(per_round),
                "stepstone_times_better": better,
            }
        out[cid] = entry
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def _better(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}x better" if x >= 1 else f"{1 / x:.1f}x worse"


def comparison_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for cid, entry in summary.items():
        for fig in entry["figures"].values():
            s = fig["stepstone"]
            if s is None and entry.get("stepstone_skipped"):
                s_text = "skipped: " + entry["stepstone_skipped"]
            else:
                s_text = _fmt(s)
            d = fig["dbos"]
            d_text = _fmt(d)
            if d is None and "dbos_skipped" in entry:
                d_text = "skipped: " + entry["dbos_skipped"]
            rows.append(
                [
                    cid,
                    fig["label"],
                    s_text,
                    d_text,
                    _fmt(fig["ratio_stepstone_over_dbos"]),
                    _spread_text(fig.get("ratio_per_round")),
                    _better(fig["stepstone_times_better"]),
                ]
            )
    return rows


def console_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def md_table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


HEADER = [
    "backend",
    "figure",
    "Stepstone",
    "DBOS 3.4.0",
    "Stepstone/DBOS",
    "per round (min-max)",
    "Stepstone is",
]


def floor_rows(floor: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    by: dict[str, list[dict[str, Any]]] = {}
    for r in floor:
        if r.get("bench") in ("sqlite_floor", "pg_floor"):
            by.setdefault(f"{r['bench']}:{r['config']}", []).append(r)
    for key, rs in by.items():
        us = statistics.median(r["us_per_commit"] for r in rs)
        p50 = [r["p50_us"] for r in rs if r.get("p50_us") is not None]
        per_row = statistics.median(r.get("us_per_row", r["us_per_commit"]) for r in rs)
        rows.append([key, _fmt(us), _fmt(statistics.median(p50)) if p50 else "-", _fmt(per_row)])
    return rows


def median_http(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One HTTP result from several: the median of every number, field by field."""

    def merge(values: list[Any]) -> Any:
        if all(isinstance(v, dict) for v in values):
            keys = dict.fromkeys(k for v in values for k in v)
            return {k: merge([v[k] for v in values if k in v]) for k in keys}
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(values):
            return statistics.median(numbers)
        return values[0]

    merged: dict[str, Any] = merge(rounds)
    return merged


def render_markdown(result: dict[str, Any]) -> str:
    m, v = result["machine"], result["versions"]
    summary = result["summary"]
    out = [
        "# Performance",
        "",
        "Generated by `make bench` (`bench/run.py`) from "
        f"`bench/results/{result['file']}`; do not edit by hand. Re-run to refresh.",
        "",
        "Stepstone, DBOS Transact, Restate and Absurd run the same workloads in one run, in"
        " rounds: each round runs every system and configuration once, in an order that"
        " rotates from round to round, each in a fresh process on a fresh database (DBOS,"
        " Restate and Absurd from their own environments under `~/.cache/stepstone-bench/`;"
        " DBOS through `bench/dbos_bench.py`). Before each process starts, PostgreSQL"
        " takes a CHECKPOINT and the page cache is synced, so no run pays for the previous"
        " one's unwritten data. Every figure is the median over rounds."
        " `Stepstone/DBOS` is the plain ratio of the two medians (below 1 is better for times,"
        " above 1 for throughput), `per round` the median (min-max) of the ratios taken within"
        " each round; the last column says it in words.",
        "",
        "## Machine and versions",
        "",
        f"- date: {result['date']} ({result['name']}, {result['config']['runs']} round(s))",
        f"- machine: {m['nproc']} CPUs, {m['memory_gb']} GB memory, {m['platform']}",
        f"- python {m['python']}, SQLite {m['sqlite']}, PostgreSQL {m.get('postgres') or '-'}",
        f"- Stepstone {v['stepstone']} (git {v['git']}), DBOS Transact {v['dbos']}",
        f"- Stepstone worker: {result['config']['worker']}",
        f"- load average (1/5/15 min) at start {m.get('loadavg_1_5_15_start')}, at end"
        f" {m.get('loadavg_1_5_15_end')}: other work on the machine shares its 2 CPUs and disk",
        "",
        "### Disk floor (`sqlite_floor.py`, same run)",
        "",
        "One single-row INSERT + COMMIT per transaction; `wal_normal_batch` is all rows in one"
        " transaction (the bound for group commit). Measured in every round; medians.",
        "",
        md_table(floor_rows(result.get("floor", [])), ["config", "us/commit", "p50 us", "us/row"]),
        "",
        "## Stepstone vs DBOS",
        "",
        "Workloads: (1) one workflow of 1,000 no-op steps (per-step overhead; *marginal* subtracts"
        " the median empty workflow), (2) 500 workflows of 3 steps started at once, waited for"
        " together, (3) a 1-step workflow created and awaited 200 times in sequence. Stepstone"
        " observes completion in-process when the worker durably records it (as DBOS's"
        " `handle.get_result()` does); the public `InstanceHandle.wait()` polls and is shown"
        " separately below.",
        "",
        "Durability per backend:",
        "",
    ]
    for cid, entry in summary.items():
        out.append(f"- `{cid}` ({entry['title']}): {entry['durability']}")
    out += ["", md_table(comparison_rows(summary), HEADER), ""]
    extra = result.get("stepstone_extra", {})
    if extra:
        out += ["### Stepstone detail", ""]
        rows = []
        for backend, figs in extra.items():
            for label, value in figs.items():
                rows.append([backend, label, _fmt(value)])
        out += [md_table(rows, ["backend", "figure", "value"]), ""]
    out += render_peers(result)
    out += ["## Stepstone alone", ""]
    mem = result.get("memory", [])
    if mem:
        out += [
            "Worker process RSS (engine + worker + SQLite, one process) once every instance"
            " sleeps `1 hour` (status `waiting`).",
            "",
            md_table(
                [
                    [
                        _fmt(r.get("instances")),
                        _fmt(r.get("baseline_rss_mb")),
                        _fmt(r.get("rss_mb")),
                        _fmt(r.get("rss_after_gc_trim_mb")),
                        _fmt(r.get("rss_without_page_cache_mb")),
                        _fmt(r.get("peak_rss_mb")),
                        _fmt(r.get("all_waiting_s")),
                    ]
                    if "error" not in r
                    else [_fmt(r.get("instances")), "error: " + r["error"], "", "", "", "", ""]
                    for r in mem
                ],
                [
                    "sleeping instances",
                    "RSS before (MB)",
                    "RSS (MB)",
                    "RSS after gc+trim (MB)",
                    "RSS without SQLite's page cache (MB)",
                    "peak RSS (MB)",
                    "seconds to all waiting",
                ],
            ),
            "",
        ]
    lst = result.get("list", [])
    for r in lst:
        if "error" in r:
            out += [f"Instances list: error: {r['error']}", ""]
            continue
        out += [
            f"Instances list, {r['instances']:,} instances stored (inserted at"
            f" {r['insert_per_s']:,}/s), page of {r['page_size']}, {r['backend']},"
            " storage.list_instances:",
            "",
            md_table(
                [
                    [name, _fmt(r[name]["p50_ms"]), _fmt(r[name]["p99_ms"])]
                    for name in (
                        "first_page",
                        "keyset_deep",
                        "status_first_page",
                        "status_keyset_deep",
                    )
                    if name in r
                ]
                + [["offset page at the same depth (once)", _fmt(r["offset_deep_once_ms"]), "-"]],
                ["page", "p50 ms", "p99 ms"],
            ),
            "",
            f"Deep pages start {r['deep_position']:,} rows in.",
            "",
        ]
    http = result.get("http", {})
    out += ["### HTTP", ""]
    if http.get("pending") or http.get("error"):
        out += [f"Pending: {http.get('pending') or http.get('error')}", ""]
    elif http:
        c, st = http["create_to_complete"], http["step_endpoint"]
        generator = st.get("generator", "httpx")
        runs = http.get("runs", 1)
        cpu = st.get("server_cpu_us_per_req")
        out += [
            "The API server (`stepstone.server.run_server`, API + worker, SQLite FULL"
            + (", an API token on every request" if http.get("auth") == "token" else "")
            + ") in its own process; the client (httpx) creates an"
            " instance and polls it every millisecond; the load generator"
            f" ({generator}) runs {st['clients']} keep-alive connections for"
            f" {_fmt(st['seconds'])} s against `GET .../instances/{{id}}/step`. Client and"
            " server share the machine"
            + (f"; medians of {runs} runs, each on a fresh server." if runs > 1 else "."),
            "",
            md_table(
                [
                    [
                        "1-step create-to-complete over HTTP",
                        f"p50 {_fmt(c['p50_ms'])} ms, p99 {_fmt(c['p99_ms'])} ms",
                    ],
                    [
                        "step endpoint",
                        f"{_fmt(st['req_per_s'])} req/s, p50 {_fmt(st['p50_ms'])} ms,"
                        f" p99 {_fmt(st['p99_ms'])} ms, {st['errors']} errors",
                    ],
                ]
                + ([["server CPU per step request", f"{_fmt(cpu)} us"]] if cpu is not None else []),
                ["figure", "value"],
            ),
            "",
        ]
        if http.get("measured_separately"):
            out += [http["measured_separately"], ""]
    diag = result.get("diag", {})
    if diag:
        out += [
            "## Where the time goes (a 200-step workflow timed, then one traced for the counts)",
            "",
        ]
        rows = []
        for key, d in diag.items():
            rows.append([key] + [_fmt(d.get(f)) for f in DIAG_FIELDS])
        out += [md_table(rows, ["system:backend", *DIAG_FIELDS]), ""]
    notes = result.get("notes", []) + [f"error: {e}" for e in result.get("errors", [])]
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if ANALYSIS.exists():
        out += [ANALYSIS.read_text().rstrip(), ""]
    return "\n".join(out)


DIAG_FIELDS = [
    "commits_per_step",
    "statements_per_step",
    "write_jobs_per_step",
    "reads_per_step",
    "wall_us_per_step",
    "cpu_us_per_step",
]


# --- every peer, cell by cell -----------------------------------------------------------------

# The figures of the peer tables: (key in FIGURES, short label)
PEER_FIGURES = [
    ("us_per_step", "W1 us/step"),
    ("empty_wf_ms", "W1 empty wf ms"),
    ("tput_wf_per_s", "W2 wf/s"),
    ("lat_p50_ms", "W3 p50 ms"),
    ("lat_p99_ms", "W3 p99 ms"),
]

# Every cell: (key, label, what a step's completion waits for, how the harness sees the end)
CELLS = [
    (
        "stepstone:sqlite_full",
        "Stepstone embedded, SQLite FULL",
        "WAL + synchronous=FULL: a step is acknowledged once its commit is fdatasynced;"
        " concurrent writers share a group sync",
        "in-process: the worker's durable end write resolves a future",
    ),
    (
        "stepstone:sqlite_normal",
        "Stepstone embedded, SQLite NORMAL",
        "WAL + synchronous=NORMAL: no sync per commit (a power loss can lose the last"
        " commits; a process crash cannot)",
        "in-process, as above",
    ),
    (
        "stepstone:http_sqlite_full",
        "Stepstone serve (HTTP API), SQLite FULL",
        "as embedded SQLite FULL",
        "the client polls GET .../instances/{id} (W3 every 1 ms, W1 every 5 ms) and, for W2,"
        " the list's total_count of complete instances every 5 ms",
    ),
    (
        "stepstone:postgres",
        "Stepstone embedded, PostgreSQL",
        "creates (claiming the instance for the local worker when it has a slot free), claims,"
        " step results and ends commit with synchronous_commit=on (a WAL flush), concurrent"
        " callers batched into group commits; a step's result commits with the next write (the"
        " next step's, or the end), before any later step runs; attempt starts commit with"
        " synchronous_commit=off (a crash only runs them again)",
        "in-process, as above",
    ),
    (
        "restate:default",
        "Restate (server + Python SDK, HTTP ingress)",
        "its defaults: one node, the replicated loglet at replication 1 on the local"
        " log-server, whose RocksDB WAL is fsynced before an append is acknowledged;"
        " ctx.run continues once the server acks the journal entry",
        "the ingress call returns when the invocation has ended",
    ),
    (
        "absurd:postgres",
        "Absurd, PostgreSQL",
        "every SDK call is an autocommit plpgsql call under synchronous_commit=on: spawn,"
        " claim, checkpoint and complete each flush the WAL; one connection per worker",
        "in-process: the worker's committed complete call resolves a future; the worker"
        " polls every 1 ms (the SDK's default is 0.25 s)",
    ),
    (
        "dbos:sqlite:default",
        "DBOS, SQLite default",
        "SQLite's defaults (DBOS sets no pragma): rollback journal DELETE, synchronous=FULL",
        "handle.get_result() in-process",
    ),
    (
        "dbos:sqlite:wal_full",
        "DBOS, SQLite WAL + FULL",
        "WAL + synchronous=FULL, set by bench/dbos_pragmas.py",
        "handle.get_result() in-process",
    ),
    (
        "dbos:sqlite:wal_normal",
        "DBOS, SQLite WAL + NORMAL",
        "WAL + synchronous=NORMAL, set by bench/dbos_pragmas.py",
        "handle.get_result() in-process",
    ),
    (
        "dbos:postgres",
        "DBOS, PostgreSQL",
        "synchronous_commit=on; each step is its own transaction",
        "handle.get_result() in-process",
    ),
]
CELL_LABELS = {key: label for key, label, _, _ in CELLS}
SHORT = {
    "stepstone:sqlite_full": "Stepstone SQLite FULL",
    "stepstone:sqlite_normal": "Stepstone SQLite NORMAL",
    "stepstone:http_sqlite_full": "Stepstone serve",
    "stepstone:postgres": "Stepstone PostgreSQL",
    "restate:default": "Restate",
    "absurd:postgres": "Absurd",
    "dbos:sqlite:default": "DBOS SQLite default",
    "dbos:sqlite:wal_full": "DBOS SQLite WAL FULL",
    "dbos:sqlite:wal_normal": "DBOS SQLite WAL NORMAL",
    "dbos:postgres": "DBOS PostgreSQL",
}

# Stepstone against a peer, like with like: (Stepstone cell, peer cell, what they share)
PAIRS = [
    ("stepstone:http_sqlite_full", "restate:default", "both over HTTP, both fsync per step"),
    ("stepstone:sqlite_full", "restate:default", "both fsync per step"),
    ("stepstone:postgres", "absurd:postgres", "PostgreSQL, synchronous_commit=on"),
    ("stepstone:postgres", "dbos:postgres", "PostgreSQL, synchronous_commit=on"),
    ("stepstone:sqlite_full", "dbos:sqlite:default", "SQLite, both synchronous=FULL"),
    ("stepstone:sqlite_normal", "dbos:sqlite:wal_normal", "SQLite WAL, synchronous=NORMAL"),
    ("stepstone:http_sqlite_full", "stepstone:sqlite_full", "the cost of HTTP"),
]

FIGURE_SOURCE = {key: (bench, field) for key, bench, field, _, _ in FIGURES}


def _value(rows: Iterable[dict[str, Any]], run: int, bench: str, field: str) -> float | None:
    for r in rows:
        if r.get("run") == run and r.get("bench") == bench and field in r:
            return float(r[field])
    return None


def _spread(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "n": len(values),
    }


def floor_us(rows: Iterable[dict[str, Any]], run: int) -> float | None:
    """The round's SQLite WAL + FULL commit floor: one INSERT, COMMIT and fdatasync."""
    for r in rows:
        if r.get("run") == run and r.get("bench") == "sqlite_floor" and r["config"] == "wal_full":
            return float(r["us_per_commit"])
    return None


def summarize_cells(rows: dict[str, list[dict[str, Any]]], runs: list[int]) -> dict[str, Any]:
    """Per cell: median (min-max) over the valid rounds. Per pair: the Stepstone/peer ratio of
    each round where both ran, then its median (min-max); both were measured minutes apart in
    the same round, so the machine's drift cancels out of the ratio."""
    cells: dict[str, Any] = {}
    for key, cell_rows in rows.items():
        if key == "floor":
            continue
        figures = {}
        for fig, _ in PEER_FIGURES:
            bench, field = FIGURE_SOURCE[fig]
            values = [v for run in runs if (v := _value(cell_rows, run, bench, field)) is not None]
            figures[fig] = _spread(values)
        cells[key] = {"label": CELL_LABELS.get(key, key), "figures": figures}
    pairs = []
    for ours, theirs, what in PAIRS:
        if ours not in rows or theirs not in rows:
            continue
        figures = {}
        for fig, _ in PEER_FIGURES:
            bench, field = FIGURE_SOURCE[fig]
            ratios = []
            for run in runs:
                a = _value(rows[ours], run, bench, field)
                b = _value(rows[theirs], run, bench, field)
                if a is not None and b:
                    ratios.append(a / b)
            figures[fig] = _spread(ratios)
        pairs.append({"stepstone": ours, "peer": theirs, "what": what, "ratios": figures})
    floor_ratios = []
    for run in runs:
        step = _value(rows.get("stepstone:sqlite_full", []), run, "seq", "us_per_step")
        floor = floor_us(rows.get("floor", []), run)
        if step is not None and floor:
            floor_ratios.append(step / floor)
    return {"rounds": len(runs), "cells": cells, "pairs": pairs, "floor": _spread(floor_ratios)}


def _spread_text(s: dict[str, Any] | None, suffix: str = "") -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return _fmt(s["median"]) + suffix
    return f"{_fmt(s['median'])}{suffix} ({_fmt(s['min'])}-{_fmt(s['max'])})"


def peer_rows(peers: dict[str, Any]) -> list[list[str]]:
    order = [key for key, _, _, _ in CELLS]
    keys = sorted(peers["cells"], key=lambda k: order.index(k) if k in order else len(order))
    return [
        [peers["cells"][k]["label"]]
        + [_spread_text(peers["cells"][k]["figures"][fig]) for fig, _ in PEER_FIGURES]
        for k in keys
    ]


def pair_rows(peers: dict[str, Any]) -> list[list[str]]:
    rows = []
    for p in peers["pairs"]:
        ours, theirs = SHORT.get(p["stepstone"], p["stepstone"]), SHORT.get(p["peer"], p["peer"])
        label = f"{ours} / {theirs}: {p['what']}"
        cols = []
        for fig, _ in PEER_FIGURES:
            suffix = "x" if fig == "tput_wf_per_s" else ""
            cols.append(_spread_text(p["ratios"][fig], suffix))
        rows.append([label, *cols])
    return rows


def _round_loads(rounds: list[dict[str, Any]]) -> list[str]:
    if not rounds:
        return []
    starts = ", ".join(_fmt(r["loadavg_before"][0]) for r in rounds)
    peaks = ", ".join(_fmt(r["peak_load1"]) for r in rounds)
    again = sum(1 for r in rounds if not r["valid"])
    text = f"1-minute load average at each round's start: {starts}; highest in each: {peaks}."
    if again:
        text += f" {again} round(s) passed the load limit and were run again, left out here."
    return [text, ""]


def render_peers(result: dict[str, Any]) -> list[str]:
    peers = result.get("peers")
    if not peers or not peers.get("cells"):
        return []
    v, c = result["versions"], result["config"]
    rounds = peers["rounds"]
    out = [
        "## Stepstone beside Restate, Absurd and DBOS",
        "",
        f"The same three workloads on every system, {rounds} round(s) in one run. A round runs"
        " every cell once, each in a fresh process on a fresh database or a fresh server, and"
        " the order rotates from round to round, so what else the machine does falls on all of"
        f" them alike. W1: one workflow of {c['n']:,} sequential no-op steps (us per step; the"
        f" empty workflow beside it). W2: {c['w']:,} workflows of 3 no-op steps started at once"
        " (workflows/s from the first create to the last completion). W3: a 1-step workflow"
        f" created and awaited {c['lat_runs']:,} times in sequence (p50, p99). Both HTTP"
        " harnesses (Stepstone's API and Restate's ingress) use the same lean keep-alive"
        " HTTP/1.1 client (`bench/peer_common.py`); W2's calls go out at once over 100"
        " connections, and a Restate ingress call holds its connection until the invocation"
        " ends, as Stepstone's worker runs 100 at a time.",
        "",
        f"Versions: Restate server {v.get('restate_server') or '-'}, restate-sdk"
        f" {v.get('restate_sdk') or '-'} on hypercorn {v.get('hypercorn') or '-'};"
        f" absurd-sdk {v.get('absurd_sdk') or '-'}, absurdctl {v.get('absurdctl') or '-'};"
        f" DBOS Transact {v.get('dbos') or '-'}. Each peer runs from its own environment under"
        " `~/.cache/stepstone-bench/`, installed by `make bench` from the registries; none is"
        " a Stepstone dependency.",
        "",
        *_round_loads(result.get("rounds", [])),
        "Median (min-max) over rounds:",
        "",
        md_table(peer_rows(peers), ["system", *(label for _, label in PEER_FIGURES)]),
        "",
        "Stepstone/peer, one ratio per round, then the median (min-max) over rounds. For times"
        " (W1, W3) below 1 means Stepstone is faster; for W2 above 1 does.",
        "",
        md_table(pair_rows(peers), ["pair", *(label for _, label in PEER_FIGURES)]),
        "",
    ]
    if peers.get("floor"):
        out += [
            "Stepstone embedded SQLite FULL, W1 us per step over the same round's SQLite WAL +"
            " FULL commit floor (`sqlite_floor.py`: one INSERT, COMMIT and fdatasync):"
            f" {_spread_text(peers['floor'], 'x')}.",
            "",
        ]
    pg = result["machine"].get("postgres_settings") or {}
    out += ["### The durability each side had", ""]
    if pg:
        settings = ", ".join(f"`{k}={val}`" for k, val in pg.items())
        out += [f"PostgreSQL server settings in this run: {settings}.", ""]
    rows = [
        [label, durability, seen] for key, label, durability, seen in CELLS if key in peers["cells"]
    ]
    out += [md_table(rows, ["system", "a step's completion waits for", "end observed by"]), ""]
    strace = result.get("durability", {})
    if strace.get("per_step"):
        out += [
            f"Counted in this run (`strace -f -c`, the difference between a {strace['steps'] + 1:,}"
            "-step and a 1-step W1, not timed): fsync-family calls per step: "
            + "; ".join(f"{SHORT.get(k, k)} {_fmt(val)}" for k, val in strace["per_step"].items())
            + ".",
            "",
        ]
    if strace.get("pg_round_trips"):
        out += [
            "PostgreSQL round trips per 1-step workflow (client socket sends under strace, the"
            f" difference between {strace['trips'] + 20} and 20 W3 runs; DBOS's harness runs W3"
            " twice; Absurd's worker polls at its default 0.25 s here): "
            + "; ".join(
                f"{SHORT.get(k, k)} {_fmt(val)}" for k, val in strace["pg_round_trips"].items()
            )
            + ".",
            "",
        ]
    out += ["What differs between the harnesses:", ""] + [f"- {n}" for n in HARNESS_NOTES] + [""]
    skipped = {k: val for k, val in result.get("skipped", {}).items() if k in PEER_SKIP_KEYS}
    if skipped:
        out += [f"- {k} not measured: {reason}" for k, reason in skipped.items()] + [""]
    return out


PEER_SKIP_KEYS = ("restate", "absurd", "dbos", "durability")

HARNESS_NOTES = [
    "Restate runs with its defaults (one node, 24 partitions, replication 1) except loopback"
    " binding, free ports, telemetry and the web UI off and quieter logs; the SDK service is a"
    " stateless `restate.Service` under hypercorn (h2c). Restate cannot be embedded: every"
    " step goes from the SDK over HTTP/2 to the server and its log-server and back.",
    "Absurd: one worker (concurrency 100, its own connection) and a client in one process;"
    " Absurd has no LISTEN/NOTIFY, so the worker polls every 1 ms (its default 0.25 s alone"
    " would put W3's p50 near 270 ms).",
    "DBOS's W1 (and its empty workflow) is a direct call of the workflow function in the"
    " caller's thread, with no create and claim through a queue as Stepstone and Absurd do;"
    " its W2 and W3 go through `DBOS.start_workflow` and `handle.get_result()`.",
    "Stepstone serve is `stepstone.server.run_server` (API and worker in one process, an API"
    " token on every request, access log off); its client polls, as a Cloudflare Workflows"
    " client does, where Restate's ingress call blocks until the invocation ends.",
]
