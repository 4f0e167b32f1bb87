"""Who asked for an action: the actor every operation is given and the audit log records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Actor kinds. A token names an API client (the CLI and scripts use the API with a token); the
# dashboard acts with its session's token; bindings and embedded calls have no token.
TOKEN = "token"
DASHBOARD = "dashboard"
EMBEDDED = "embedded"
# No token checked: a server started without auth (development), or the metrics-only path.
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for an action: passed into every operation explicitly, never read from a
    global, so a bulk job started by Alice acts (and is recorded) as Alice."""

    kind: str
    name: str | None = None
    id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "id": self.id}

    @classmethod
    def from_dict(cls, value: Any) -> Actor:
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            return EMBEDDED_ACTOR
        return cls(value["kind"], value.get("name"), value.get("id"))

    def describe(self) -> str:
        if self.name and self.id:
            return f"{self.kind} {self.name} ({self.id})"
        return f"{self.kind} {self.name or self.id or ''}".strip()


EMBEDDED_ACTOR = Actor(EMBEDDED)
