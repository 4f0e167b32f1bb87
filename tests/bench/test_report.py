"""The benchmark report's arithmetic: per-round ratios, the floor ratio, the strace counts.

These use made-up rows, never a peer: the peers run only under ``make bench``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import durability, report


def rows(run: int, us_per_step: float, wf_per_s: float, p50: float) -> list[dict[str, Any]]:
    return [
        {"bench": "env", "run": run},
        {"bench": "seq", "run": run, "us_per_step": us_per_step, "empty_wf_ms": 1.0},
        {"bench": "tput_start", "run": run, "wf_per_s": wf_per_s},
        {"bench": "lat_start", "run": run, "p50_ms": p50, "p99_ms": 2 * p50},
    ]


def test_ratios_are_taken_within_each_round_then_their_median() -> None:
    cells = {
        # Round 1 is slow for both: W1's ratios are 0.5 and 0.8, so their median is 0.65,
        # where the ratio of the two medians would be 550 / 725 = 0.76.
        "stepstone:http_sqlite_full": rows(0, 100, 400, 2) + rows(1, 1000, 40, 20),
        "restate:default": rows(0, 200, 100, 4) + rows(1, 1250, 10, 40) + rows(2, 5, 5, 5),
        "floor": [
            {"bench": "sqlite_floor", "config": "wal_full", "run": 0, "us_per_commit": 50.0},
            {"bench": "sqlite_floor", "config": "wal_normal", "run": 0, "us_per_commit": 9.0},
        ],
        "stepstone:sqlite_full": rows(0, 60, 1000, 1),
    }
    summary = report.summarize_cells(cells, [0, 1])

    pair = next(
        p
        for p in summary["pairs"]
        if p["peer"] == "restate:default" and p["stepstone"] == "stepstone:http_sqlite_full"
    )
    assert pair["ratios"]["us_per_step"] == {"median": 0.65, "min": 0.5, "max": 0.8, "n": 2}
    assert pair["ratios"]["tput_wf_per_s"]["median"] == 4.0
    # Round 2 is not a valid round here: Restate's figures from it are left out.
    assert summary["cells"]["restate:default"]["figures"]["us_per_step"]["n"] == 2
    assert summary["floor"] == {"median": 1.2, "min": 1.2, "max": 1.2, "n": 1}
    assert "floor" not in summary["cells"]


def test_a_pair_missing_a_side_is_left_out_and_the_page_still_renders() -> None:
    cells = {"stepstone:sqlite_full": rows(0, 60, 1000, 1), "absurd:postgres": []}
    summary = report.summarize_cells(cells, [0])
    assert all(p["peer"] != "restate:default" for p in summary["pairs"])
    # Absurd ran but Stepstone on PostgreSQL did not: no pair, and Absurd's cell has no figure.
    assert all(p["peer"] != "absurd:postgres" for p in summary["pairs"])
    assert summary["cells"]["absurd:postgres"]["figures"]["us_per_step"] is None
    lines = report.render_peers(
        {
            "peers": summary,
            "versions": {},
            "config": {"n": 1000, "w": 500, "lat_runs": 200},
            "machine": {},
            "skipped": {"restate": "could not be installed: npm not found"},
        }
    )
    text = "\n".join(lines)
    assert "| Stepstone embedded, SQLite FULL | 60.0 |" in text
    assert "| Absurd, PostgreSQL | - | - | - | - | - |" in text
    assert "restate not measured: could not be installed: npm not found" in text


def test_strace_summary_counts_only_the_named_calls(tmp_path: Path) -> None:
    out = tmp_path / "strace.txt"
    out.write_text(
        "% time     seconds  usecs/call     calls    errors syscall\n"
        "------ ----------- ----------- --------- --------- ----------------\n"
        " 98.00    0.480000         470      1021           fdatasync\n"
        "  1.50    0.007000         700        10         2 fsync\n"
        "  0.50    0.002000          10       200           sendto\n"
        "------ ----------- ----------- --------- --------- ----------------\n"
        "100.00    0.489000                  1231         2 total\n"
    )
    assert durability.strace_total(out, durability.SYNCS) == 1031
    assert durability.strace_total(out, durability.SENDS) == 200
