"""Identifier rules of spec 1.4, shared by the engine, the API and the embedding API."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9\-_]*$")
ADDRESSABLE_ID_RE = re.compile(r"^[a-zA-Z0-9, */#_\-]+$")
RESERVED_ID_RE = re.compile(r"^cf_[0-9a-f]{64}$")
CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f]")
MAX_WORKFLOW_NAME = 64
MAX_INSTANCE_ID = 100
MAX_ADDRESSABLE_ID = 271
MAX_EVENT_TYPE = 100
MAX_STEP_NAME = 256


def workflow_name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_WORKFLOW_NAME:
        return f"a workflow name has 1 to {MAX_WORKFLOW_NAME} characters"
    if not NAME_RE.match(name):
        return "a workflow name uses letters, digits, '-' and '_' and does not start with '-'"
    return None


def instance_id_problem(instance_id: object) -> str | None:
    if not isinstance(instance_id, str) or not 1 <= len(instance_id) <= MAX_INSTANCE_ID:
        return f"an instance id has 1 to {MAX_INSTANCE_ID} characters"
    if not NAME_RE.match(instance_id):
        return "an instance id uses letters, digits, '-' and '_' and does not start with '-'"
    if RESERVED_ID_RE.match(instance_id):
        return "ids of the form cf_<64 hex characters> are reserved for the system"
    return None


def addressable_id_problem(instance_id: object) -> str | None:
    if not isinstance(instance_id, str) or not 1 <= len(instance_id) <= MAX_ADDRESSABLE_ID:
        return f"an instance id has 1 to {MAX_ADDRESSABLE_ID} characters"
    if not ADDRESSABLE_ID_RE.match(instance_id):
        return "an instance id uses letters, digits, spaces and , * / # _ -"
    return None


def event_type_problem(event_type: object) -> str | None:
    if not isinstance(event_type, str) or not 1 <= len(event_type) <= MAX_EVENT_TYPE:
        return f"an event type has 1 to {MAX_EVENT_TYPE} characters"
    if not NAME_RE.match(event_type):
        return "an event type uses letters, digits, '-' and '_' ('.' is not supported)"
    return None


def step_name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_STEP_NAME:
        return f"a step name has 1 to {MAX_STEP_NAME} characters"
    if CONTROL_CHARS_RE.search(name):
        return "a step name has no control characters"
    return None
