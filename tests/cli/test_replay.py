"""``stepstone replay`` and ``stepstone instances export`` (issue 17).

Histories are recorded once, by the real engine on a SQLite file (through the harness and its
fake clock), from ``tests.testing.flows.Approval`` and ``Fanout``; each test then replays them
against a version of the code named by a stepstone.toml, as a deploy gate in CI would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner

from stepstone.cli import app
from stepstone.storage import open_storage
from stepstone.testing import WorkflowHarness

REPO = Path(__file__).resolve().parents[2]
HISTORY = REPO / "tests" / "engine" / "histories" / "order-waiting-for-approval.json"
T = TypeVar("T")


def in_thread(job: Callable[[], T]) -> T:
    """Run ``job`` off the test's thread, whose event loop pytest-asyncio owns."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(job).result()


@dataclass
class Store:
    folder: Path
    db: str

    def config(self, approval: str = "Approval", fanout: str = "Fanout") -> str:
        path = self.folder / f"{approval}-{fanout}.toml"
        path.write_text(
            "[[workflows]]\n"
            f'name = "approval"\nclass_name = "{approval}"\nscript_name = "tests.testing.flows"\n'
            "[[workflows]]\n"
            f'name = "fanout"\nclass_name = "{fanout}"\nscript_name = "tests.testing.flows"\n'
        )
        return str(path)


async def _record(db: str, config: str) -> None:
    async with await WorkflowHarness.open(config, url=db) as harness:
        await harness.create("approval", {"sku": "W1"}, id="waiting")
        done = await harness.create("approval", {"sku": "D1"}, id="done")
        await done.send_event("approval", {"approved": True})
        rejected = await harness.create("approval", {"sku": "R1"}, id="rejected")
        await rejected.send_event("approval", {"approved": False})
        await harness.create("fanout", {"names": ["a", "b"]}, id="fan")
        assert (await done.status())["status"] == "complete"
        assert (await rejected.status())["status"] == "errored"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    folder = tmp_path_factory.mktemp("replay")
    recorded = Store(folder, f"sqlite:///{folder / 'recorded.db'}")
    in_thread(lambda: asyncio.run(_record(recorded.db, recorded.config())))
    return recorded


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    @property
    def verdicts(self) -> dict[str, dict[str, Any]]:
        return {v["instance"]: v for v in json.loads(self.stdout)["instances"]}


def cli(*args: str) -> Ran:
    result = in_thread(lambda: CliRunner().invoke(app, list(args)))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def replay(store: Store, config: str, *more: str) -> Ran:
    return cli("replay", "--db", store.db, "--config", config, "--json", *more)


def test_the_code_that_recorded_the_histories_agrees_with_them(store: Store) -> None:
    ran = replay(store, store.config())
    assert ran.code == 0, ran.stdout + ran.stderr
    verdicts = ran.verdicts
    assert set(verdicts) == {"waiting", "done", "rejected", "fan"}
    assert all(v["agrees"] for v in verdicts.values())
    assert verdicts["waiting"]["nextSteps"] == ['step.wait_for_event "approval-1"']
    assert verdicts["waiting"]["replayed"] == 1
    assert verdicts["done"]["replayed"] == 3
    assert verdicts["fan"]["replayed"] == 3  # two branches and the byte stream


def test_a_step_added_before_recorded_ones_diverges_and_exits_1(store: Store) -> None:
    ran = replay(store, store.config("ApprovalStepAdded"))
    assert ran.code == 1
    waiting = ran.verdicts["waiting"]
    assert not waiting["agrees"] and waiting["failsInstance"]
    assert 'asked for step.do "fraud check-1"' in waiting["divergence"]
    assert 'recorded history has step.do "reserve-1"' in waiting["divergence"]
    done = ran.verdicts["done"]
    assert not done["agrees"] and not done["failsInstance"]  # an ended instance never reruns
    assert ran.verdicts["fan"]["agrees"]


def test_a_renamed_step_diverges_where_it_is_asked_for(store: Store) -> None:
    verdicts = replay(store, store.config("ApprovalStepRenamed"), "--workflow", "approval").verdicts
    assert set(verdicts) == {"waiting", "done", "rejected"}
    for verdict in verdicts.values():
        assert 'step.do "reserve stock-1"' in verdict["divergence"]


def test_another_return_value_diverges_only_where_the_record_completed(store: Store) -> None:
    verdicts = replay(store, store.config("ApprovalNewOutput")).verdicts
    assert verdicts["waiting"]["agrees"] and verdicts["rejected"]["agrees"]
    done = verdicts["done"]
    assert not done["agrees"] and not done["failsInstance"]
    assert done["divergence"] == (
        'run() now returns {"shipped":true,"tracking":"trk-D1","version":2} where the record'
        ' has {"shipped":true,"tracking":"trk-D1"}'
    )


def test_a_step_appended_is_new_work_for_waiting_instances_only(store: Store) -> None:
    verdicts = replay(store, store.config("ApprovalStepAppended")).verdicts
    assert verdicts["waiting"]["agrees"]
    assert verdicts["done"]["divergence"] == (
        'the record completed, but the code now asks for step.do "notify-1"'
    )


def test_a_wait_for_another_event_type_diverges(store: Store) -> None:
    waiting = replay(store, store.config("ApprovalOtherEvent"), "--instance", "waiting").verdicts
    assert waiting["waiting"]["divergence"] == (
        "step.wait_for_event \"approval-1\" waits for events of type 'approval-v2' where the"
        " record waits for 'approval'"
    )


def test_a_recorded_step_no_longer_asked_for_diverges(store: Store) -> None:
    ran = replay(store, store.config(fanout="FanoutBranchDropped"), "--workflow", "fanout")
    assert ran.code == 1
    assert ran.verdicts["fan"]["divergence"] == (
        'the code no longer asks for the recorded step.do "fetch b-1"'
    )


def test_status_selects_instances(store: Store) -> None:
    ran = replay(store, store.config("ApprovalNewOutput"), "--status", "waiting")
    assert ran.code == 0
    assert set(ran.verdicts) == {"waiting"}


def test_a_replay_writes_nothing(store: Store) -> None:
    async def snapshot() -> list[Any]:
        storage = open_storage(store.db)
        await storage.open()
        try:
            rows = []
            for wf in (await storage.list_workflows(None, None, 0, 100))[0]:
                for instance_id in ("waiting", "done", "rejected", "fan"):
                    record = await storage.get_instance(wf.pk, instance_id)
                    if record is not None:
                        rows.append((record, await storage.load_events(record.pk)))
            return rows
        finally:
            await storage.close()

    before = in_thread(lambda: asyncio.run(snapshot()))
    assert replay(store, store.config("ApprovalStepAdded")).code == 1
    assert in_thread(lambda: asyncio.run(snapshot())) == before


def test_an_export_replays_as_the_store_does(store: Store, tmp_path: Path) -> None:
    exported = tmp_path / "history.json"
    ran = cli("instances", "export", "--db", store.db, "--output", str(exported))
    assert ran.code == 0, ran.stderr
    assert "exported 4 instance(s)" in ran.stderr
    document = json.loads(exported.read_text())
    assert document["format"] == "stepstone-history" and document["version"] == 1
    fan = next(i for i in document["instances"] if i["id"] == "fan")
    assert list(fan["streams"]) == ["render-1"]
    for config in (store.config(), store.config("ApprovalStepAdded")):
        from_store = replay(store, config)
        from_file = cli("replay", "--history", str(exported), "--config", config, "--json")
        assert (from_file.code, from_file.verdicts) == (from_store.code, from_store.verdicts)


def test_export_to_stdout_with_filters(store: Store) -> None:
    ran = cli(
        "instances", "export", "--db", store.db, "--workflow", "approval", "--status", "errored"
    )
    assert ran.code == 0
    assert [i["id"] for i in json.loads(ran.stdout)["instances"]] == ["rejected"]


def test_the_committed_recorded_history_replays_against_the_examples() -> None:
    ran = cli(
        "replay", "--history", str(HISTORY), "--config", str(REPO / "examples" / "stepstone.toml")
    )
    assert ran.code == 0, ran.stdout + ran.stderr
    assert "1 instance(s) replayed: 1 agree, 0 diverge" in ran.stdout
    assert "order-workflow" in ran.stdout and "agrees" in ran.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give the recorded instances with --db URL or --history FILE"),
        (["--db", "sqlite:///x.db", "--history", "h.json"], "one of them"),
        (["--db", "sqlite:///x.db", "--status", "done"], "unknown status 'done'"),
        (["--db", "STORE", "--workflow", "nope"], "has no workflow 'nope'"),
        (["--db", "sqlite:///missing.db"], "no store at"),
    ],
)
def test_usage_errors_exit_2(store: Store, args: list[str], message: str) -> None:
    args = [store.db if arg == "STORE" else arg for arg in args]
    ran = cli("replay", "--config", store.config(), *args)
    assert ran.code == 2
    assert message in " ".join(ran.stderr.replace("│", " ").split())


def test_a_history_that_is_not_an_export_exits_2(store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else", "version": 1, "instances": []}')
    ran = cli("replay", "--history", str(bad), "--config", store.config())
    assert ran.code == 2
    assert "format is not 'stepstone-history'" in ran.stderr
    bad.write_text("not json")
    assert "is not JSON" in cli("replay", "--history", str(bad), "--config", store.config()).stderr


def test_the_exit_code_gates_a_deploy_as_a_real_process(store: Store) -> None:
    def run(config: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stepstone", "replay", "--db", store.db, "--config", config],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    good, bad = run(store.config()), run(store.config("ApprovalStepAdded"))
    assert good.returncode == 0, good.stdout + good.stderr
    assert bad.returncode == 1
    assert "DIVERGES" in bad.stdout and "3 diverge" in bad.stderr


def test_replay_and_export_on_postgresql(pg_database: str, tmp_path: Path) -> None:
    recorded = Store(tmp_path, pg_database)
    in_thread(lambda: asyncio.run(_record(recorded.db, recorded.config())))
    assert replay(recorded, recorded.config()).code == 0
    diverging = replay(recorded, recorded.config("ApprovalStepAdded"))
    assert diverging.code == 1
    assert sum(not v["agrees"] for v in diverging.verdicts.values()) == 3
    exported = tmp_path / "pg.json"
    assert cli("instances", "export", "--db", pg_database, "-o", str(exported)).code == 0
    from_file = cli("replay", "--history", str(exported), "--config", recorded.config(), "--json")
    assert from_file.code == 0
    assert set(from_file.verdicts) == {"waiting", "done", "rejected", "fan"}


def test_export_refuses_a_missing_store_and_an_unknown_workflow(
    store: Store, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.db"
    ran = cli("instances", "export", "--db", f"sqlite:///{missing}")
    assert ran.code == 2 and "no store at" in ran.stderr
    assert not missing.exists()  # reading never creates a store
    ran = cli("instances", "export", "--db", store.db, "--workflow", "nope")
    assert ran.code == 1
    assert "no workflow 'nope' in this store" in ran.stderr
