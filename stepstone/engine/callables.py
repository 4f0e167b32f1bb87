"""How the engine calls a step's function: with or without ``ctx``, on or off the event loop."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

_CallShape = tuple[bool, tuple[str, ...], bool]
_SHAPES: dict[tuple[Any, int, tuple[str, ...]], _CallShape] = {}


def _call_shape(fn: Callable[..., Any]) -> _CallShape:
    """``(wants_ctx, required parameters, is a coroutine function)`` of a step callback."""
    parameters = inspect.signature(fn).parameters
    required = tuple(
        name
        for name, p in parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and name != "ctx"
    )
    return "ctx" in parameters, required, inspect.iscoroutinefunction(fn)


def _cached_call_shape(fn: Callable[..., Any]) -> _CallShape:
    """``_call_shape``, remembered per code object and defaults.

    A loop that defines its callback inline makes a new function each time around, but always
    with the same code, and a plain function's signature is its code's plus which parameters
    have defaults. (Wrapped functions and those with a ``__signature__`` may claim another.)
    """
    code = getattr(fn, "__code__", None)
    if (
        code is None
        or not inspect.isfunction(fn)
        or hasattr(fn, "__wrapped__")
        or hasattr(fn, "__signature__")
    ):
        return _call_shape(fn)
    key = (code, len(fn.__defaults__ or ()), tuple(fn.__kwdefaults__ or ()))
    shape = _SHAPES.get(key)
    if shape is None:
        if len(_SHAPES) >= 4096:  # code made at run time (exec) must not grow this forever
            _SHAPES.clear()
        shape = _SHAPES[key] = _call_shape(fn)
    return shape


def direct_call(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    """``fn()``, or ``fn(ctx)`` when it has a parameter named ctx; parameters with defaults
    (the ``lambda i=i: ...`` idiom) are left alone."""
    wants_ctx, required, is_coroutine = _cached_call_shape(fn)
    if required:
        raise TypeError(
            f"step.do(name, fn): fn takes no parameters but ctx; it requires {list(required)}"
        )
    if wants_ctx:
        return off_loop(lambda ctx: fn(ctx=ctx), with_ctx=True, blocking=not is_coroutine)
    return off_loop(fn, with_ctx=False, blocking=not is_coroutine)


def off_loop(
    fn: Callable[..., Any], *, with_ctx: bool, blocking: bool
) -> Callable[[dict[str, Any]], Any]:
    """Call ``fn`` with or without ctx; a plain (blocking) function runs in a thread so it
    cannot stall the worker's event loop, heartbeats included."""
    if not blocking:
        return fn if with_ctx else (lambda ctx: fn())
    if with_ctx:
        return lambda ctx: asyncio.to_thread(fn, ctx)
    return lambda ctx: asyncio.to_thread(fn)


async def invoke(call: Callable[[dict[str, Any]], Any], ctx: dict[str, Any]) -> Any:
    result = call(ctx)
    if inspect.isawaitable(result):
        return await result
    return result
