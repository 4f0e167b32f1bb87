"""What a browser asks of the server's root: ``/`` (sent on to the dashboard) and
``/favicon.ico`` (which every page load asks for, credentials or not).

Both are answered before the Guard, since a browser sends no API token. A request that carries
API credentials, or that does not ask for HTML, gets the API's own answer at ``/``, so API
clients see exactly what they saw before.
"""

from __future__ import annotations

import struct
import zlib

from starlette.datastructures import Headers
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

DASHBOARD = "/dashboard"
FAVICON_PATH = "/favicon.ico"
CREDENTIAL_HEADERS = ("authorization", "x-auth-key", "x-auth-email")
ICON_SIZE = 32
# The dashboard's accent blue; three stones climbing, one per step.
ICON_RGB = (0x24, 0x56, 0xD6)
STONES = ((8.0, 24.0), (16.0, 16.0), (24.0, 8.0))
STONE_RADIUS = 5.5


def _icon_pixel(x: int, y: int) -> bytes:
    for cx, cy in STONES:
        # Sampled at the pixel's centre, with a one-pixel ramp so the edges are smooth.
        distance = ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2) ** 0.5
        coverage = min(1.0, max(0.0, STONE_RADIUS + 0.5 - distance))
        if coverage > 0:
            return bytes((*ICON_RGB, round(255 * coverage)))
    return b"\x00\x00\x00\x00"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def favicon_bytes() -> bytes:
    """A 32x32 ICO holding one PNG (every current browser reads PNG inside ICO)."""
    rows = (
        b"\x00" + b"".join(_icon_pixel(x, y) for x in range(ICON_SIZE)) for y in range(ICON_SIZE)
    )
    png = b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", struct.pack(">IIBBBBB", ICON_SIZE, ICON_SIZE, 8, 6, 0, 0, 0)),
            _png_chunk(b"IDAT", zlib.compress(b"".join(rows), 9)),
            _png_chunk(b"IEND", b""),
        )
    )
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", ICON_SIZE, ICON_SIZE, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


FAVICON = favicon_bytes()


def wants_dashboard(headers: Headers) -> bool:
    """A browser opening the root: it asks for HTML and carries no API credentials."""
    if any(name in headers for name in CREDENTIAL_HEADERS):
        return False
    return "text/html" in headers.get("accept", "")


class FrontDoor:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path = scope["path"]
            if path == FAVICON_PATH:
                icon = Response(
                    FAVICON,
                    media_type="image/x-icon",
                    headers={"cache-control": "public, max-age=86400"},
                )
                await icon(scope, receive, send)
                return
            if path == "/" and wants_dashboard(Headers(scope=scope)):
                await RedirectResponse(DASHBOARD, status_code=302)(scope, receive, send)
                return
        await self.app(scope, receive, send)
