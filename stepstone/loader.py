"""Import workflow classes named by ``script_name`` (a Python module) and ``class_name``."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types

from stepstone.authoring.entrypoint import WorkflowEntrypoint
from stepstone.errors import NonRetryableError
from stepstone.storage.base import VersionRecord

MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
CLASS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class WorkflowLoadError(Exception):
    """The module or class cannot be imported here."""


def install_workers_shim() -> None:
    """Let code written for Cloudflare Python (``from workers import WorkflowEntrypoint``) run.

    Only when no real ``workers`` package is importable, so an installed one always wins.
    """
    if "workers" in sys.modules:
        return
    try:
        found = importlib.util.find_spec("workers")
    except (ImportError, ValueError):
        found = None
    if found is not None:
        return
    workers = types.ModuleType("workers", "Stepstone's stand-in for Cloudflare's workers SDK")
    workflows = types.ModuleType("workers.workflows")
    workers.WorkflowEntrypoint = WorkflowEntrypoint  # type: ignore[attr-defined]
    workers.NonRetryableError = NonRetryableError  # type: ignore[attr-defined]
    workflows.NonRetryableError = NonRetryableError  # type: ignore[attr-defined]
    workflows.WorkflowEntrypoint = WorkflowEntrypoint  # type: ignore[attr-defined]
    workers.workflows = workflows  # type: ignore[attr-defined]
    sys.modules["workers"] = workers
    sys.modules["workers.workflows"] = workflows


def load_class(script_name: str, class_name: str) -> type[WorkflowEntrypoint]:
    if not MODULE_RE.match(script_name):
        raise WorkflowLoadError(f"script_name {script_name!r} is not a Python module path")
    if not CLASS_RE.match(class_name):
        raise WorkflowLoadError(f"class_name {class_name!r} is not a Python class name")
    install_workers_shim()
    try:
        module = importlib.import_module(script_name)
    except Exception as exc:
        raise WorkflowLoadError(f"cannot import module {script_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not callable(getattr(cls, "run", None)):
        raise WorkflowLoadError(
            f"{script_name}.{class_name} is not a WorkflowEntrypoint class with a run() method"
        )
    return cls


def load_version(version: VersionRecord) -> type[WorkflowEntrypoint]:
    return load_class(version.script_name, version.class_name)
