"""The history's event types are one vocabulary, ``stepstone.model.events``.

Whatever names a type outside it (the migrations' SQL, the stores' SQL, the dashboard's
script, which cannot import it) must name one of its types, and each of its types must be
written somewhere, so a misspelt type and an orphaned one both fail here rather than as an
event no reader recognises.

A type is recognised by its shape (a family such as ``wait_`` or an ending such as
``_timed_out``) and by where it stands (compared with a ``type`` column or field), so a typo
in either half of a name is still caught.
"""

from __future__ import annotations

import re
from pathlib import Path

import stepstone
from stepstone.model import events
from stepstone.model.events import (
    ALL_EVENTS,
    ROLLBACK_PREFIX,
    SPEC_EVENTS,
    STEP_EVENTS,
    TERMINAL_EVENTS,
    EventType,
)

PACKAGE = Path(stepstone.__file__).parent
MIGRATIONS = PACKAGE / "storage" / "migrations"
# Found wherever the dashboard lives (#14 moves it).
(SCRIPT,) = PACKAGE.rglob("dashboard.js")

FAMILIES = ("workflow", "step", "attempt", "sleep", "wait", "rollback")
ENDINGS = tuple(
    "_" + e
    for e in (
        "started",
        "completed",
        "errored",
        "queued",
        "running",
        "paused",
        "waiting",
        "waiting_for_pause",
        "terminated",
        "timed_out",
        "repaired",
    )
)
# Other things SQL compares a ``type`` with: sqlite_master's kinds of object.
NOT_EVENTS = {"table", "index", "trigger", "view"}

SINGLE_QUOTED = re.compile(r"'([A-Za-z_]+)'")
DOUBLE_QUOTED = re.compile(r'"([A-Za-z_]+)"')
SQL_COMPARED = re.compile(r"\btype\s*(?:=|<>|!=)\s*'([^']*)'", re.IGNORECASE)
SQL_LISTED = re.compile(r"\btype\s+(?:NOT\s+)?IN\s*\(([^)]*)\)", re.IGNORECASE)
JS_COMPARED = re.compile(r"\.type\s*[!=]==?\s*[\"']([^\"']*)[\"']")
MEMBER = re.compile(r"\bEventType\.([A-Z_]+)\b")
# ``kind_prefix + EventType.STEP_STARTED``: a step's event, or its rollback twin's.
PREFIXED = re.compile(r"\w*prefix\s*\+\s*EventType\.([A-Z_]+)\b")


def _shaped(word: str, strict: bool = False) -> bool:
    """Whether ``word`` looks like an event type; ``strict`` wants family and ending both
    (Python names plenty of ``already_running`` and ``workflow_name``)."""
    family = word.split("_", 1)[0] in FAMILIES and "_" in word
    ending = word.endswith(ENDINGS)
    return family and ending if strict else family or ending


def _resolve(named: str) -> str | None:
    """What a compared value names: a literal itself, an f-string's ``{EventType.X}`` the
    member's string; a bare format field (filled in elsewhere) names nothing here."""
    member = re.fullmatch(r"\{EventType\.([A-Z_]+)\}", named)
    if member:
        return str(getattr(EventType, member.group(1), f"EventType.{member.group(1)}"))
    if re.fullmatch(r"\{\w*\}", named):
        return None
    return named


def sql_types(text: str) -> set[str]:
    found = {w for w in SINGLE_QUOTED.findall(text) if _shaped(w)}
    compared = SQL_COMPARED.findall(text)
    for listed in SQL_LISTED.findall(text):
        compared += [v.strip().strip("'") for v in listed.split(",")]
    found |= {v for v in map(_resolve, compared) if v is not None}
    return found - NOT_EVENTS


def script_types(text: str) -> set[str]:
    quoted = DOUBLE_QUOTED.findall(text) + SINGLE_QUOTED.findall(text)
    return {w for w in quoted if _shaped(w)} | set(JS_COMPARED.findall(text))


def _sources(*, migrations: bool = False) -> dict[Path, str]:
    return {
        p: p.read_text()
        for p in sorted(PACKAGE.rglob("*.py"))
        if migrations or MIGRATIONS not in p.parents
    }


def test_the_values_are_plain_strings() -> None:
    # A driver, an encoder or a dict sees exactly what a literal gave it.
    assert all(type(t) is str for t in ALL_EVENTS)
    assert len(ALL_EVENTS) == len([n for n in vars(EventType) if n.isupper()])


def test_the_groups_hold_only_types() -> None:
    assert STEP_EVENTS and set(STEP_EVENTS) <= ALL_EVENTS
    assert TERMINAL_EVENTS < ALL_EVENTS
    assert sorted(ALL_EVENTS - SPEC_EVENTS) == [EventType.STEP_REPAIRED]
    # Each step event has its rollback twin, and every rollback_step/attempt type is one.
    twins = {ROLLBACK_PREFIX + t for t in STEP_EVENTS}
    assert twins <= ALL_EVENTS
    assert {t for t in ALL_EVENTS if t.startswith(("rollback_step_", "rollback_attempt_"))} == twins


def test_the_migrations_name_only_known_types() -> None:
    named: dict[str, set[str]] = {}
    for path in sorted(MIGRATIONS.rglob("*")):
        if path.suffix in (".sql", ".py"):
            named[path.name] = sql_types(path.read_text())
    assert any(named.values()), "no type found: the extraction is broken"
    unknown = {name: types - ALL_EVENTS for name, types in named.items() if types - ALL_EVENTS}
    assert not unknown


def test_the_stores_sql_names_only_known_types() -> None:
    stores = sorted((PACKAGE / "storage").rglob("*.py"))
    named = {p.relative_to(PACKAGE).as_posix(): sql_types(p.read_text()) for p in stores}
    assert any(named.values()), "no type found: the extraction is broken"
    unknown = {name: types - ALL_EVENTS for name, types in named.items() if types - ALL_EVENTS}
    assert not unknown


def test_the_dashboard_script_names_only_known_types() -> None:
    named = script_types(SCRIPT.read_text())
    assert named, "no type found: the extraction is broken"
    assert named <= ALL_EVENTS, named - ALL_EVENTS


def test_python_spells_no_type_as_a_literal() -> None:
    # A literal would be a second spelling of the vocabulary, free to drift from it.
    spelt = {
        path.relative_to(PACKAGE).as_posix(): found
        for path, text in _sources().items()
        if path != Path(events.__file__)
        and (
            found := {
                w
                for w in DOUBLE_QUOTED.findall(text) + SINGLE_QUOTED.findall(text)
                if _shaped(w, strict=True)
            }
        )
    }
    assert not spelt


def test_every_type_is_written_somewhere() -> None:
    # The fold reads every type, so only a use elsewhere (nearly always a write) counts;
    # a rollback's step and attempt types are written as the prefix plus the step's type.
    readers = {Path(events.__file__), PACKAGE / "model" / "history.py"}
    used: set[str] = set()
    for path, text in _sources(migrations=True).items():
        if path in readers:
            continue
        used |= {getattr(EventType, m) for m in MEMBER.findall(text) if hasattr(EventType, m)}
        used |= {ROLLBACK_PREFIX + getattr(EventType, m) for m in PREFIXED.findall(text)}
    for path in MIGRATIONS.rglob("*.sql"):
        used |= sql_types(path.read_text())
    assert not ALL_EVENTS - used, sorted(ALL_EVENTS - used)
