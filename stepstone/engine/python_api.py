"""The decorator forms of Cloudflare's Python Workflows SDK.

``@step.do(...)`` returns a ``StepFunction``: calling it runs (or replays) the step once per run,
after its dependencies. Dependencies are found as workerd's SDK finds them, in one of two modes
chosen by the ``python_workflows_implicit_dependencies`` compatibility flag:

- implicit (the flag on): a parameter named like another decorated step receives its result;
- legacy (the flag off): ``step.do(name, depends=[a, b])`` lists the steps, whose results are
  passed to the non-``ctx`` parameters in order.

``@step.with_rollback(name)`` returns a ``SagaStepFunction``, whose ``.undo`` registers the
compensation that ``step.rollback_all()`` runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from stepstone.authoring.config import ResolvedConfig, parse_rollback_config, resolve_config
from stepstone.engine.callables import off_loop

if TYPE_CHECKING:
    from stepstone.engine.step_host import StepHost


class DecoratingStep(Protocol):
    """What a decorated step needs from the step object that made it (``ReplayStep``)."""

    implicit: bool

    @property
    def activation(self) -> StepHost: ...

    def find_step_function(self, param: str) -> StepFunction | None: ...

    async def run_do(
        self,
        name: str,
        call: Callable[[dict[str, Any]], Any],
        *,
        config: Any,
        rollback: Callable[..., Any] | None,
        rollback_config: Any,
        saga: SagaStepFunction | None = None,
    ) -> Any: ...


class StepFunction:
    """What the decorator form returns: call it to run (or replay) the step, once per run."""

    def __init__(self, step: DecoratingStep, name: str, fn: Callable[..., Any], **options: Any):
        self._step = step
        self.name = name
        self.fn = fn
        self._options = options
        self._task: asyncio.Future[Any] | None = None

    def __call__(self) -> asyncio.Future[Any]:
        if self._task is None:
            self._task = self._step.activation.spawn(self._resolve())
        return self._task

    def __repr__(self) -> str:
        return f"<step {self.name!r}>"

    async def _resolve(self) -> Any:
        params = list(inspect.signature(self.fn).parameters)
        needed = [p for p in params if p != "ctx"]
        if self._options.get("legacy"):
            dependencies = _listed_dependencies(needed, self._options.get("depends"))
        else:
            dependencies = self._named_dependencies(needed)
        if self._options.get("concurrent"):
            values = list(await asyncio.gather(*(d() for d in dependencies)))
        else:
            values = [await d() for d in dependencies]
        deps = dict(zip(needed, values, strict=True))
        wants_ctx = "ctx" in params
        fn = self.fn

        def bind(ctx: dict[str, Any]) -> Any:
            return fn(**deps, ctx=ctx) if wants_ctx else fn(**deps)

        call = off_loop(bind, with_ctx=True, blocking=not inspect.iscoroutinefunction(fn))
        return await self._run(call)

    def _named_dependencies(self, needed: list[str]) -> list[StepFunction]:
        found = []
        for param in needed:
            dependency = self._step.find_step_function(param)
            if dependency is None:
                raise TypeError(f"Received unexpected parameter {param}")
            found.append(dependency)
        return found

    async def _run(self, call: Callable[[dict[str, Any]], Any]) -> Any:
        return await self._step.run_do(
            self.name,
            call,
            config=self._options.get("config"),
            rollback=self._options.get("rollback"),
            rollback_config=self._options.get("rollback_config"),
        )


def _listed_dependencies(needed: list[str], depends: Sequence[Any] | None) -> list[StepFunction]:
    """The legacy ``depends`` list, checked as workerd's SDK checks it (same messages)."""
    if depends is None:
        if needed:
            raise TypeError(
                f"Step has {len(needed)} non-ctx parameter(s) but no 'depends' list provided"
            )
        return []
    if len(depends) != len(needed):
        raise TypeError(
            f"Step declares {len(needed)} non-ctx parameter(s) but 'depends' has "
            f"{len(depends)} item(s)"
        )
    for item in depends:
        if not isinstance(item, StepFunction):
            raise TypeError(
                f"step.do(depends=[...]) lists decorated steps; got {type(item).__name__}"
            )
    return list(depends)


def check_depends(depends: object) -> Sequence[Any] | None:
    if depends is None or isinstance(depends, list | tuple):
        return depends
    raise TypeError(
        f"step.do(name, depends=[...]): depends is a list of steps, not {type(depends).__name__}"
    )


class SagaStepFunction(StepFunction):
    """A ``@step.with_rollback(name, config=None)`` step; ``@fn.undo`` adds its compensation.

    ``undo(err, value)`` receives the error given to ``step.rollback_all`` (or, when none was
    given, the step's own error if it failed) and the step's output (``None`` if it failed).
    """

    def __init__(self, step: DecoratingStep, name: str, fn: Callable[..., Any], config: Any):
        super().__init__(step, name, fn, config=config, legacy=not step.implicit)
        self.undo_fn: Callable[..., Any] | None = None
        self.undo_config: Any = None
        self._undo_config_given = False

    def undo(self, config: Any = None) -> Any:
        """``@fn.undo``, ``@fn.undo()`` or ``@fn.undo(config={...})``."""
        if callable(config):
            self.undo_fn = config
            return config

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(func):
                raise TypeError("@fn.undo decorates a function")
            self.undo_fn = func
            self.undo_config = config
            self._undo_config_given = config is not None
            return func

        return decorator

    def resolved_undo_config(self) -> ResolvedConfig:
        """The undo's own config, else the step's retries and timeout (as the page says)."""
        if self._undo_config_given:
            return parse_rollback_config(self.undo_config, self.name)
        inherited = resolve_config(self._options.get("config"), self.name)
        return dataclasses.replace(inherited, sensitive=False)

    async def _run(self, call: Callable[[dict[str, Any]], Any]) -> Any:
        return await self._step.run_do(
            self.name,
            call,
            config=self._options.get("config"),
            rollback=None,
            rollback_config=None,
            saga=self,
        )


def public_names(cls: type, names: dict[str, str]) -> None:
    """Errors Python raises for a bad call name the function's qualified name: make it the
    public one (``step.do() got an unexpected keyword argument``), not the engine's class."""
    for attr, public in names.items():
        fn = getattr(cls, attr)
        fn.__qualname__ = public
        fn.__code__ = fn.__code__.replace(co_qualname=public)
