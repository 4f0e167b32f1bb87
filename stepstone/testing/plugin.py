"""The pytest plugin (entry point ``stepstone``): the ``stepstone_harness`` fixture.

The fixture opens a ``WorkflowHarness`` on the project named by the ini option
``stepstone_config`` (a stepstone.toml, a wrangler file or its folder, relative to the
rootdir), or on no project when it is unset; tests then ``register`` their classes. It needs
pytest-asyncio, which runs the async fixture and tests.

The engine is imported when the fixture is first used, not when pytest loads the plugin: a
test run that never asks for the harness pays nothing for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from stepstone.testing.harness import WorkflowHarness

CONFIG_OPTION = "stepstone_config"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        CONFIG_OPTION,
        "stepstone.toml, wrangler file or project folder the stepstone_harness fixture opens",
        default="",
    )


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixture needs it; the harness itself does not
    pass
else:

    @pytest_asyncio.fixture
    async def stepstone_harness(request: pytest.FixtureRequest) -> AsyncIterator[WorkflowHarness]:
        """A fresh harness per test: in-memory store, fake clock at 2026-01-01T00:00Z."""
        from stepstone.testing.harness import WorkflowHarness

        try:
            configured = str(request.config.getini(CONFIG_OPTION) or "")
        except ValueError:  # the plugin's options are not registered (imported, not loaded)
            configured = ""
        config = Path(request.config.rootpath, configured) if configured else None
        harness = await WorkflowHarness.open(config)
        try:
            yield harness
        finally:
            await harness.close()
