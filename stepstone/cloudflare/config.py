"""A Cloudflare project's wrangler config (and ``.dev.vars``) as a Stepstone ``ProjectConfig``.

What is read: ``name``, ``main``, ``account_id``, ``compatibility_date``,
``compatibility_flags``, ``[[workflows]]`` (``name``, ``binding``, ``class_name``,
``script_name``, ``limits``, ``concurrency``, ``schedules``), ``[vars]``, ``[triggers] crons``,
and the secrets in ``.dev.vars`` (or ``.env`` when there is no ``.dev.vars``, as wrangler does).
Keys Stepstone has no use for (KV, D1, routes, ...) are ignored with one warning line; a value
that is present but wrong is refused with the file, the key and the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stepstone.cloudflare import jsonc
from stepstone.project import (
    DEFAULT_ACCOUNT,
    ProjectConfig,
    ProjectConfigError,
    WorkflowConfig,
)

log = logging.getLogger("stepstone.project")

# Keys that mean something to Stepstone, or that it can safely take as read.
TOP_KEYS = {
    "$schema",
    "name",
    "main",
    "account_id",
    "compatibility_date",
    "compatibility_flags",
    "workflows",
    "vars",
    "triggers",
}
WORKFLOW_KEYS = {
    "name",
    "binding",
    "class_name",
    "script_name",
    "limits",
    "concurrency",
    "schedules",
    # A Stepstone extension (lifecycle webhooks); wrangler warns of it and deploys anyway.
    "webhooks",
}
MAX_STEPS = 25_000
IMPLICIT_FLAG = "python_workflows_implicit_dependencies"
NO_IMPLICIT_FLAG = "no_python_workflows_implicit_dependencies"
# workerd: the implicit signature is implied by ``python_workers`` from this date on.
IMPLICIT_SINCE = "2026-02-25"
BINDING_RE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def load_wrangler(path: str | Path) -> ProjectConfig:
    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise ProjectConfigError(f"{file}: no such file") from None
    try:
        raw = tomllib.loads(text) if file.suffix == ".toml" else jsonc.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ProjectConfigError(f"{file}: {exc}") from None
    if not isinstance(raw, dict):
        raise ProjectConfigError(f"{file}: the top level must be a table/object")
    return _Reader(file).project(raw)


def implicit_dependencies(flags: tuple[str, ...], date: str | None) -> bool:
    """Which ``step.do`` signature workerd gives this project.

    As workerd decides it: the flag turns it on, ``no_…`` off; otherwise it is implied for
    Python Workers (every Stepstone project is one) whose compatibility date is on or after
    2026-02-25. wrangler fills a missing date with today's, so no date means on.
    """
    if IMPLICIT_FLAG in flags:
        return True
    if NO_IMPLICIT_FLAG in flags:
        return False
    return (date or dt.date.today().isoformat()) >= IMPLICIT_SINCE


def read_dotenv(file: Path) -> dict[str, str]:
    """``KEY=value`` lines; ``#`` comments, ``export`` and single or double quotes allowed."""
    values: dict[str, str] = {}
    for number, raw in enumerate(file.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ProjectConfigError(f"{file}:{number}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            quote, value = value[0], value[1:-1]
            if quote == '"':
                value = value.replace("\\n", "\n").replace('\\"', '"')
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


class _Reader:
    def __init__(self, file: Path) -> None:
        self.file = file
        self.ignored: list[str] = []

    def fail(self, key: str, reason: str) -> ProjectConfigError:
        return ProjectConfigError(f"{self.file}: {key}: {reason}")

    def text(self, raw: Mapping[str, Any], key: str, where: str, *, required: bool) -> str | None:
        value = raw.get(key)
        if value is None:
            if required:
                raise self.fail(f"{where}{key}", "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}{key}", f"must be a non-empty string, got {value!r}")
        return value

    def project(self, raw: dict[str, Any]) -> ProjectConfig:
        self.ignored += sorted(set(raw) - TOP_KEYS)
        name = self.text(raw, "name", "", required=False)
        account = self.text(raw, "account_id", "", required=False) or DEFAULT_ACCOUNT
        root, main_module = self.main(raw)
        date = self.text(raw, "compatibility_date", "", required=False)
        if date is not None and not DATE_RE.match(date):
            raise self.fail("compatibility_date", f"must be a YYYY-MM-DD date, got {date!r}")
        flags = self.strings(raw.get("compatibility_flags", []), "compatibility_flags")
        workflows_raw = raw.get("workflows", [])
        if not isinstance(workflows_raw, list):
            raise self.fail("workflows", "must be an array of tables")
        workflows = tuple(
            self.workflow(item, index, name, main_module)
            for index, item in enumerate(workflows_raw)
        )
        self.unique(workflows)
        triggers = raw.get("triggers", {})
        if not isinstance(triggers, dict):
            raise self.fail("triggers", "must be a table")
        self.ignored += [f"triggers.{k}" for k in sorted(set(triggers) - {"crons"})]
        crons = self.strings(triggers.get("crons", []), "triggers.crons")
        env = self.vars(raw.get("vars", {}))
        env.update(self.secrets())
        if self.ignored:
            log.warning(
                "%s: ignoring what Stepstone does not use: %s", self.file, ", ".join(self.ignored)
            )
        return ProjectConfig(
            account_id=account,
            workflows=workflows,
            env=env,
            root=root,
            source=self.file.resolve(),
            name=name,
            main_module=main_module,
            crons=crons,
            implicit_dependencies=implicit_dependencies(flags, date),
        )

    def main(self, raw: Mapping[str, Any]) -> tuple[Path, str | None]:
        folder = self.file.resolve().parent
        main = self.text(raw, "main", "", required=False)
        if main is None:
            return folder, None
        path = folder / main
        if path.suffix != ".py":
            raise self.fail("main", f"must be a Python module (.py), got {main!r}")
        if not path.is_file():
            raise self.fail("main", f"{main!r} does not exist (looked for {path})")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", path.stem):
            raise self.fail("main", f"{path.name!r} is not importable as a Python module name")
        # As in Python Workers, the modules beside ``main`` import each other by bare name.
        return path.parent, path.stem

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"must be a list of strings, got {value!r}")
        return tuple(value)

    def positive(self, value: Any, key: str, most: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, f"must be a positive integer, got {value!r}")
        if most is not None and value > most:
            raise self.fail(key, f"must be at most {most}, got {value}")
        return value

    def workflow(
        self, item: Any, index: int, project_name: str | None, main_module: str | None
    ) -> WorkflowConfig:
        where = f"workflows[{index}]."
        if not isinstance(item, dict):
            raise self.fail(f"workflows[{index}]", "must be a table")
        self.ignored += [f"{where}{k}" for k in sorted(set(item) - WORKFLOW_KEYS)]
        name = self.text(item, "name", where, required=True)
        class_name = self.text(item, "class_name", where, required=True)
        binding = self.text(item, "binding", where, required=True)
        assert name is not None and class_name is not None and binding is not None
        if not BINDING_RE.match(binding):
            raise self.fail(f"{where}binding", f"{binding!r} is not a valid identifier")
        script = self.text(item, "script_name", where, required=False)
        external = script is not None and script != project_name
        if script is None or script == project_name:
            # The class lives in this Worker: its ``main`` module.
            if main_module is None:
                raise self.fail(f"{where}script_name", "no script_name and no main to find it in")
            script = main_module
        limits = item.get("limits", {})
        if not isinstance(limits, dict):
            raise self.fail(f"{where}limits", "must be a table")
        self.ignored += [f"{where}limits.{k}" for k in sorted(set(limits) - {"steps"})]
        steps = limits.get("steps")
        if steps is not None:
            steps = self.positive(steps, f"{where}limits.steps", MAX_STEPS)
        concurrency = item.get("concurrency", {})
        if not isinstance(concurrency, dict):
            raise self.fail(f"{where}concurrency", "must be a table like { limit = 10 }")
        self.ignored += [f"{where}concurrency.{k}" for k in sorted(set(concurrency) - {"limit"})]
        limit = concurrency.get("limit")
        if limit is not None:
            limit = self.positive(limit, f"{where}concurrency.limit", 2**31 - 1)
            if external:
                # As wrangler: the limit belongs to the Worker that defines the class.
                raise self.fail(
                    f"{where}concurrency", "cannot be set on a workflow of another Worker"
                )
        return WorkflowConfig(
            name=name,
            class_name=class_name,
            script_name=script,
            schedules=self.strings(item.get("schedules", []), f"{where}schedules"),
            limits_steps=steps,
            binding=binding,
            concurrency_limit=limit,
            webhooks=self.webhooks(item.get("webhooks"), where),
        )

    def webhooks(self, value: Any, where: str) -> tuple[dict[str, Any], ...]:
        from stepstone.errors import InvalidRequest
        from stepstone.webhooks.config import config_entries

        try:
            return config_entries(value, "")
        except InvalidRequest as exc:
            raise self.fail(f"{where}webhooks", str(exc.detail or exc)) from None

    def unique(self, workflows: tuple[WorkflowConfig, ...]) -> None:
        for attribute in ("name", "binding"):
            seen: set[str] = set()
            for index, wf in enumerate(workflows):
                value = getattr(wf, attribute)
                if value in seen:
                    raise self.fail(f"workflows[{index}].{attribute}", f"{value!r} is used twice")
                seen.add(value)

    def vars(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail("vars", "must be a table")
        return dict(value)

    def secrets(self) -> dict[str, str]:
        folder = self.file.parent
        for name in (".dev.vars", ".env"):
            candidate = folder / name
            if candidate.is_file():
                return read_dotenv(candidate)
        return {}
