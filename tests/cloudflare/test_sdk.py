"""Stepstone's `workers` module: Response and Request as Cloudflare's SDK shapes them."""

from __future__ import annotations

from http import HTTPMethod

import pytest

from stepstone.cloudflare.sdk import DurableObject, Request, Response


async def test_response_json_is_static_and_an_instance_method() -> None:
    made = Response.json({"a": 1}, status=201, headers={"x-one": "1"})
    assert (made.status, made.headers["content-type"], made.headers["x-one"]) == (
        201,
        "application/json",
        "1",
    )
    assert await made.json() == {"a": 1}
    with pytest.raises(OSError, match="Body already used"):
        await made.text()


async def test_response_bodies_and_redirects() -> None:
    text = Response("hi")
    assert text.headers["content-type"].startswith("text/plain")
    assert await text.text() == "hi"
    assert await Response(b"\x00\x01").bytes() == b"\x00\x01"
    moved = Response.redirect("https://example.com/x")
    assert (moved.status, moved.headers["location"]) == (302, "https://example.com/x")
    with pytest.raises(ValueError, match="redirect status"):
        Response.redirect("/", 200)
    with pytest.raises(TypeError, match="Unsupported type"):
        Response({"not": "a body"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="200-599"):
        Response("x", status=99)


async def test_request_method_url_headers_and_body() -> None:
    request = Request(
        "http://x/y?z=1", method="post", headers={"Content-Type": "application/json"}, body="[1]"
    )
    assert request.method is HTTPMethod.POST and request.url == "http://x/y?z=1"
    assert request.headers["content-type"] == "application/json"
    copy = request.clone()
    assert await request.json() == [1]
    assert await copy.bytes() == b"[1]"


def test_a_durable_object_is_importable_but_cannot_run() -> None:
    class Counter(DurableObject):
        pass

    with pytest.raises(NotImplementedError, match="Counter is a Durable Object"):
        Counter()
