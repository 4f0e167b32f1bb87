"""The project a server or worker registers at start: a ``stepstone.toml`` (below), or a
Cloudflare project's wrangler config (``stepstone.cloudflare.config``).

```toml
account_id = "default"            # optional
[[workflows]]
name = "orders"
class_name = "OrderWorkflow"
script_name = "examples.order"    # an importable module, relative to this file's folder
schedules = ["0 2 * * *"]         # optional cron expressions
limits = { steps = 1000 }         # optional
concurrency = { limit = 10 }      # optional: at most 10 instances running, the rest queued
[env]
PAYMENTS_URL = "http://127.0.0.1:9000"
```
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ACCOUNT = "default"


class ProjectConfigError(ValueError):
    """stepstone.toml cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    name: str
    class_name: str
    script_name: str
    schedules: tuple[str, ...] = ()
    limits_steps: int | None = None
    # wrangler's ``binding``: the name under which ``env`` holds this workflow's binding.
    binding: str | None = None
    # ``concurrency = {limit = N}``: at most N instances of this workflow run at once.
    concurrency_limit: int | None = None
    # Lifecycle webhooks (a Stepstone extension), as written; see stepstone.webhooks.config.
    webhooks: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class ProjectConfig:
    account_id: str = DEFAULT_ACCOUNT
    workflows: tuple[WorkflowConfig, ...] = ()
    env: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None
    # From a wrangler config: the file, the Worker's name, its ``main`` module (importable
    # once ``root`` is on sys.path), its ``[triggers] crons`` and the step.do signature.
    source: Path | None = None
    name: str | None = None
    main_module: str | None = None
    crons: tuple[str, ...] = ()
    implicit_dependencies: bool = True

    def activate(self) -> None:
        """Make the config's folder importable, so ``script_name`` resolves next to it."""
        if self.root is not None and str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))

    @property
    def bindings(self) -> dict[str, str]:
        """Binding name -> workflow name, for the workflows that declare a binding."""
        return {wf.binding: wf.name for wf in self.workflows if wf.binding}


def _concurrency_limit(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"limit"}:
        raise ProjectConfigError(f"{where}: concurrency must be a table like {{ limit = 10 }}")
    limit = value.get("limit")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 2**31 - 1
    ):
        raise ProjectConfigError(f"{where}: concurrency.limit must be a positive integer")
    return limit


def _webhooks(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    from stepstone.errors import InvalidRequest
    from stepstone.webhooks.config import config_entries

    try:
        return config_entries(value, "")
    except InvalidRequest as exc:
        raise ProjectConfigError(f"{where}: {exc.detail or exc}") from None


# Looked for, in this order, in the working directory when no --config is given.
PROJECT_FILES = ("wrangler.toml", "wrangler.jsonc", "wrangler.json", "stepstone.toml")


def find_project_file(folder: str | Path = ".") -> Path | None:
    for name in PROJECT_FILES:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None


def is_wrangler_file(path: str | Path) -> bool:
    file = Path(path)
    return file.name.startswith("wrangler") or file.suffix in (".json", ".jsonc")


def load_project(path: str | Path) -> ProjectConfig:
    """Read a stepstone.toml, or a wrangler.toml / wrangler.jsonc / wrangler.json."""
    file = Path(path)
    if is_wrangler_file(file):
        from stepstone.cloudflare.config import load_wrangler

        return load_wrangler(file)
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ProjectConfigError(f"{file}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProjectConfigError(f"{file}: {exc}") from None
    unknown = set(raw) - {"account_id", "workflows", "env"}
    if unknown:
        raise ProjectConfigError(f"{file}: unknown keys {sorted(unknown)}")
    workflows = []
    for index, item in enumerate(raw.get("workflows", [])):
        where = f"{file}: workflows[{index}]"
        if not isinstance(item, dict):
            raise ProjectConfigError(f"{where} is not a table")
        extra = set(item) - {
            "name",
            "class_name",
            "script_name",
            "schedules",
            "limits",
            "concurrency",
            "webhooks",
        }
        if extra:
            raise ProjectConfigError(f"{where}: unknown keys {sorted(extra)}")
        try:
            name, class_name, script_name = item["name"], item["class_name"], item["script_name"]
        except KeyError as exc:
            raise ProjectConfigError(f"{where}: missing {exc.args[0]}") from None
        schedules = item.get("schedules", [])
        if isinstance(schedules, str):
            schedules = [schedules]
        limits = item.get("limits", {})
        workflows.append(
            WorkflowConfig(
                name=str(name),
                class_name=str(class_name),
                script_name=str(script_name),
                schedules=tuple(schedules),
                limits_steps=limits.get("steps") if isinstance(limits, dict) else None,
                concurrency_limit=_concurrency_limit(item.get("concurrency"), where),
                webhooks=_webhooks(item.get("webhooks"), where),
            )
        )
    env = raw.get("env", {})
    if not isinstance(env, dict):
        raise ProjectConfigError(f"{file}: [env] must be a table")
    return ProjectConfig(
        account_id=str(raw.get("account_id", DEFAULT_ACCOUNT)),
        workflows=tuple(workflows),
        env=env,
        root=file.resolve().parent,
    )
