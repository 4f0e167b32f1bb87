"""The pytest plugin, as a project that installs Stepstone uses it: a real pytest run in a
subprocess, on a project of its own, whose tests ask for ``stepstone_harness``."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

WORKFLOW = """
from stepstone import WorkflowEntrypoint


class Greeter(WorkflowEntrypoint):
    async def run(self, event, step):
        await step.sleep("wait a week", "7 days")
        return await step.do("greet", lambda: "hello " + event["payload"]["name"])
"""

TESTS = """
async def test_a_week_passes_at_once(stepstone_harness):
    run = await stepstone_harness.create("greeter", {"name": "ana"})
    assert (await run.status())["status"] == "waiting"
    await stepstone_harness.advance("7 days")
    assert await run.output() == "hello ana"


async def test_a_mocked_greeting(stepstone_harness):
    stepstone_harness.mock_step("greet", "mocked")
    run = await stepstone_harness.create("greeter", {"name": "ana"})
    assert (await run.run_to_end())["output"] == "mocked"
"""


def test_the_plugin_is_installed_as_a_pytest11_entry_point() -> None:
    plugins = {e.name: e.value for e in entry_points(group="pytest11")}
    assert plugins.get("stepstone") == "stepstone.testing.plugin"


def test_a_project_gets_the_fixture_opened_on_its_config(tmp_path: Path) -> None:
    (tmp_path / "greeting.py").write_text(WORKFLOW)
    (tmp_path / "stepstone.toml").write_text(
        '[[workflows]]\nname = "greeter"\nclass_name = "Greeter"\nscript_name = "greeting"\n'
    )
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nstepstone_config = stepstone.toml\n"
        "asyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    (tmp_path / "test_greeter.py").write_text(TESTS)
    # Only the two plugins by their entry-point names: autoloading every installed plugin
    # costs seconds, and -p stepstone still finds this one through its entry point.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-p", "asyncio", "-p", "stepstone", str(tmp_path)]
    result = subprocess.run(
        command,
        check=False,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
