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
            entry["figures"][key] = {
                "label": label,
                "stepstone": s,
                "dbos": d,
                "ratio_stepstone_over_dbos": ratio,
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


HEADER = ["backend", "figure", "Stepstone", "DBOS 3.4.0", "Stepstone/DBOS", "Stepstone is"]


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
        "Stepstone and DBOS Transact run the same workloads in one run, alternating, each on a"
        " fresh database, in separate processes (DBOS from its own venv, `.venv-bench`, with the"
        " shared harness `dbos_bench.py` unchanged). Before each process starts, PostgreSQL"
        " takes a CHECKPOINT and the page cache is synced, so no run pays for the previous"
        " one's unwritten data. Every figure is the median over runs."
        " `Stepstone/DBOS` is the plain ratio of the two medians (below 1 is better for times,"
        " above 1 for throughput); the last column says it in words.",
        "",
        "## Machine and versions",
        "",
        f"- date: {result['date']} ({result['name']}, {result['config']['runs']} run(s))",
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
        " transaction (the bound for group commit).",
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
        out += ["## Where the time goes (one 200-step workflow, first run)", ""]
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
