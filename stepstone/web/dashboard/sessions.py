"""Dashboard sessions: the API token stays on the server, the browser holds a random id.

The cookie is HttpOnly and SameSite=Strict and carries only a 256-bit random session id; the
store keys sessions by its SHA-256, so even a dump of the store cannot be replayed as a cookie.
The token is re-checked on every request (a revoked token ends its sessions at once). Sessions
live in this process: a restart signs everyone out, which is the safe direction to fail.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

SESSION_COOKIE = "stepstone_session"
LOGIN_COOKIE = "stepstone_login"
COOKIE_PATH = "/dashboard"
IDLE_SECONDS = 12 * 3600
MAX_AGE_SECONDS = 7 * 24 * 3600
MAX_SESSIONS = 10_000


@dataclass
class Session:
    """One signed-in browser. ``secret`` is None only when the server runs without auth."""

    secret: str | None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def flash(self, kind: str, message: str) -> None:
        self.flashes.append((kind, message))

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flashes = self.flashes, []
        return taken

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf.encode(), str(given).encode())


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def create(self, secret: str | None) -> tuple[str, Session]:
        self._evict()
        session_id = secrets.token_urlsafe(32)
        session = Session(secret)
        self._sessions[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.seen > IDLE_SECONDS or now - session.created > MAX_AGE_SECONDS:
            del self._sessions[key]
            return None
        session.seen = now
        return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_key(session_id), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _evict(self) -> None:
        if len(self._sessions) < MAX_SESSIONS:
            return
        # The least recently seen half goes; signing in again is cheap.
        ordered = sorted(self._sessions.items(), key=lambda item: item[1].seen)
        for key, _ in ordered[: len(ordered) // 2]:
            del self._sessions[key]
