"""A workflow module some workers cannot import, as on a machine without its dependencies."""

from __future__ import annotations

import os

if os.environ.get("SCALE_TEST_CANNOT_IMPORT"):
    raise ImportError("this worker lacks the module's dependencies")

from tests.scale.flows import Pipeline as Picky

__all__ = ["Picky"]
