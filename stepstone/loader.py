"""Import workflow classes named by ``script_name`` (a Python module) and ``class_name``."""

from __future__ import annotations

import importlib
import re

from stepstone.authoring.entrypoint import WorkflowEntrypoint
from stepstone.cloudflare import shim
from stepstone.storage.base import VersionRecord

MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
CLASS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class WorkflowLoadError(Exception):
    """The module or class cannot be imported here."""


def install_workers_shim() -> None:
    """Let code written for Cloudflare Python (``from workers import WorkflowEntrypoint``) run:
    Stepstone's ``workers`` module replaces any other (see ``stepstone.cloudflare.shim``)."""
    shim.install()


# script_name -> whether its step.do takes the implicit-dependencies signature; set from the
# project's compatibility flags (a wrangler config) when it is registered in this process.
_IMPLICIT_DEPENDENCIES: dict[str, bool] = {}


def set_implicit_dependencies(script_name: str, implicit: bool) -> None:
    _IMPLICIT_DEPENDENCIES[script_name] = implicit


def implicit_dependencies(version: VersionRecord) -> bool:
    """The ``step.do`` signature for this version's module: workerd's current one unless its
    project's compatibility flags and date say otherwise."""
    return _IMPLICIT_DEPENDENCIES.get(version.script_name, True)


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


# The worker reads this attribute of the class it is given when it starts an activation.
IMPLICIT_ATTRIBUTE = "__stepstone_implicit_dependencies__"


def load_version(version: VersionRecord) -> type[WorkflowEntrypoint]:
    cls = load_class(version.script_name, version.class_name)
    # The flag belongs to the class's module (its project), so one value per class.
    setattr(cls, IMPLICIT_ATTRIBUTE, implicit_dependencies(version))
    return cls
