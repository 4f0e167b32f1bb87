"""The project's compatibility flags reach the activation that runs its workflows."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepstone import Engine

MODULE = """
from workers import WorkflowEntrypoint


class Probe(WorkflowEntrypoint):
    async def run(self, event, step):
        return step.activation.implicit_dependencies
"""


@pytest.mark.parametrize(
    ("module", "settings", "expected"),
    [
        ("flags_legacy_date", 'compatibility_date = "2025-08-01"', False),
        ("flags_new_date", 'compatibility_date = "2026-03-01"', True),
        (
            "flags_opt_in",
            'compatibility_date = "2025-08-01"\n'
            'compatibility_flags = ["python_workflows_implicit_dependencies"]',
            True,
        ),
        (
            "flags_opt_out",
            'compatibility_date = "2026-03-01"\n'
            'compatibility_flags = ["no_python_workflows_implicit_dependencies"]',
            False,
        ),
    ],
)
async def test_compatibility_flags_select_the_step_do_signature(
    tmp_path: Path, module: str, settings: str, expected: bool
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / f"{module}.py").write_text(MODULE)
    config = tmp_path / "wrangler.toml"
    config.write_text(
        f'main = "src/{module}.py"\n{settings}\n\n'
        '[[workflows]]\nname = "probe"\nbinding = "PROBE"\nclass_name = "Probe"\n'
    )
    engine = await Engine.open("memory://", config=config)
    try:
        handle = await engine.env().PROBE.create()
        assert (await handle.wait(10))["output"] is expected
    finally:
        await engine.close()
