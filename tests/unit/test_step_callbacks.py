"""How ``step.do(name, fn)`` decides to call ``fn()`` or ``fn(ctx)``, remembered per code."""

from __future__ import annotations

import functools
import types
from typing import Any

import pytest

from stepstone.engine.callables import direct_call as _direct_call

CTX: dict[str, Any] = {"attempt": 1}


async def call(fn: Any) -> Any:
    result = _direct_call(fn)(CTX)
    return await result if hasattr(result, "__await__") else result


async def test_inline_callbacks_made_in_a_loop_each_keep_their_own_default() -> None:
    async def make(i: int) -> Any:
        async def callback(i: int = i) -> int:
            return i * 10

        return await call(callback)

    assert [await make(i) for i in range(3)] == [0, 10, 20]


async def test_the_same_code_without_its_default_is_refused_not_served_from_memory() -> None:
    async def callback(i: int = 1) -> int:
        return i

    assert await call(callback) == 1
    stripped = types.FunctionType(callback.__code__, callback.__globals__)
    with pytest.raises(TypeError, match=r"requires \['i'\]"):
        _direct_call(stripped)


async def test_ctx_is_passed_by_name_also_through_a_wrapper() -> None:
    async def inner(ctx: dict[str, Any]) -> int:
        return int(ctx["attempt"])

    @functools.wraps(inner)
    async def wrapper(*args: Any, **kwargs: Any) -> int:
        return await inner(*args, **kwargs)

    assert await call(inner) == 1
    assert await call(wrapper) == 1
