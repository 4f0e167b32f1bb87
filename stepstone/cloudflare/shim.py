"""Put Stepstone's ``workers`` module (and the bits of ``pyodide`` and ``js`` that Cloudflare's
Python examples import) where a project's ``import workers`` finds it.

A real ``workers`` package (Cloudflare's ``workers-runtime-sdk``) imports ``js`` and so cannot
work outside Pyodide: Stepstone's module always takes its place, with one warning saying so.
``pyodide`` and ``js`` are supplied only when nothing by those names is installed.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from typing import Any

from stepstone.cloudflare import sdk
from stepstone.errors import NonRetryableError

log = logging.getLogger("stepstone.loader")
SHIM_DOC = "Stepstone's stand-in for Cloudflare's Python Workers SDK"


def _findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _to_js(value: Any, *args: Any, **kwargs: Any) -> Any:
    """Pyodide's conversion to JavaScript; with no JavaScript, the value itself."""
    return value


def _workers() -> tuple[types.ModuleType, types.ModuleType]:
    workers = types.ModuleType("workers", SHIM_DOC)
    for name in sdk.__all__:
        setattr(workers, name, getattr(sdk, name))
    workers.__all__ = list(sdk.__all__)  # type: ignore[attr-defined]
    workflows = types.ModuleType("workers.workflows", "Workflow classes and errors")
    workflows.NonRetryableError = NonRetryableError  # type: ignore[attr-defined]
    workflows.WorkflowEntrypoint = sdk.WorkflowEntrypoint  # type: ignore[attr-defined]
    workers.workflows = workflows  # type: ignore[attr-defined]
    # A package, so that ``import workers.workflows`` resolves through sys.modules.
    workers.__path__ = []
    return workers, workflows


def _pyodide() -> tuple[types.ModuleType, types.ModuleType]:
    pyodide = types.ModuleType("pyodide", "Stepstone's stand-in: no JavaScript to convert to")
    ffi = types.ModuleType("pyodide.ffi")
    ffi.to_js = _to_js  # type: ignore[attr-defined]
    ffi.create_proxy = _to_js  # type: ignore[attr-defined]
    pyodide.ffi = ffi  # type: ignore[attr-defined]
    pyodide.__path__ = []
    return pyodide, ffi


def _js() -> types.ModuleType:
    js = types.ModuleType("js", "Stepstone's stand-in: Object.fromEntries builds a dict")

    class Object:
        @staticmethod
        def fromEntries(entries: Any) -> dict[Any, Any]:
            return dict(entries)

    js.Object = Object  # type: ignore[attr-defined]
    return js


def install() -> None:
    """Make ``import workers`` (and ``pyodide.ffi``, ``js.Object``) give Stepstone's modules."""
    current = sys.modules.get("workers")
    if current is not None and getattr(current, "__doc__", None) == SHIM_DOC:
        return
    if current is not None or _findable("workers"):
        origin = getattr(current, "__file__", None) or _origin("workers")
        log.warning(
            "a 'workers' package is installed (%s) but only runs inside Pyodide;"
            " workflow modules get Stepstone's workers module instead",
            origin,
        )
        for name in [n for n in sys.modules if n == "workers" or n.startswith("workers.")]:
            del sys.modules[name]
    workers, workflows = _workers()
    sys.modules["workers"] = workers
    sys.modules["workers.workflows"] = workflows
    if "pyodide" not in sys.modules and not _findable("pyodide"):
        pyodide, ffi = _pyodide()
        sys.modules["pyodide"] = pyodide
        sys.modules["pyodide.ffi"] = ffi
    if "js" not in sys.modules and not _findable("js"):
        sys.modules["js"] = _js()


def _origin(name: str) -> str:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return "?"
    return str(spec.origin if spec is not None and spec.origin else "?")
