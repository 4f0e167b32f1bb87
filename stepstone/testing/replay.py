"""Replay an exported history in a test: ``stepstone replay --history`` as a function.

``verdicts = await replay_history("prod-waiting.json", "stepstone.toml")`` checks each
recorded instance against the code the config names (or a ``{workflow: class}`` mapping),
running no step; ``assert_replays(verdicts)`` fails the test naming every divergence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stepstone.authoring.entrypoint import WorkflowEntrypoint
from stepstone.engine.recorded import decode_export
from stepstone.engine.replay_check import CheckEnv, ReplayVerdict, check_instance
from stepstone.loader import IMPLICIT_ATTRIBUTE, load_class
from stepstone.project import ProjectConfig, load_project

Code = Mapping[str, type[WorkflowEntrypoint]] | str | Path | ProjectConfig


def workflow_classes(code: Code) -> tuple[dict[str, type[WorkflowEntrypoint]], dict[str, Any]]:
    """The classes (by workflow name) and ``env`` values of a config, or a mapping as given."""
    if isinstance(code, Mapping):
        return dict(code), {}
    project = code if isinstance(code, ProjectConfig) else load_project(code)
    project.activate()
    classes = {}
    for wf in project.workflows:
        cls = load_class(wf.script_name, wf.class_name)
        setattr(cls, IMPLICIT_ATTRIBUTE, project.implicit_dependencies)
        classes[wf.name] = cls
    return classes, dict(project.env)


async def replay_history(
    history: str | Path | bytes, code: Code, *, env: Mapping[str, Any] | None = None
) -> list[ReplayVerdict]:
    """Check every instance of an exported history (a file, or its bytes) against ``code``."""
    where = "the history" if isinstance(history, bytes) else str(history)
    data = history if isinstance(history, bytes) else _read(Path(history))
    classes, values = workflow_classes(code)
    check_env = CheckEnv({**values, **(env or {})})
    verdicts = []
    for item in decode_export(data, where):
        cls = classes.get(item.workflow)
        if cls is None:
            verdicts.append(
                ReplayVerdict(
                    item.workflow,
                    item.id,
                    item.status,
                    agrees=False,
                    divergence=f"no code given for workflow {item.workflow!r}",
                    outcome="not checked",
                )
            )
            continue
        verdicts.append(await check_instance(item, cls, env=check_env))
    return verdicts


def _read(path: Path) -> bytes:
    # A test's own file, read once: not worth a thread.
    return path.read_bytes()


def assert_replays(verdicts: Sequence[ReplayVerdict]) -> None:
    """Fail naming each instance whose record the code no longer agrees with."""
    diverging = [v for v in verdicts if not v.agrees]
    if diverging:
        lines = "\n".join(
            f"  {v.workflow}/{v.instance} ({v.status}): {v.divergence}" for v in diverging
        )
        raise AssertionError(f"{len(diverging)} of {len(verdicts)} instance(s) diverge:\n{lines}")
