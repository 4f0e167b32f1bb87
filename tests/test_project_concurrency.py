"""``concurrency = { limit = N }`` in stepstone.toml and wrangler config, and its refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepstone.cloudflare.config import load_wrangler
from stepstone.project import ProjectConfigError, load_project

STEPSTONE = """
[[workflows]]
name = "orders"
class_name = "OrderWorkflow"
script_name = "shop.orders"
{extra}
"""

WRANGLER = """
name = "shop"
main = "src/entry.py"
[[workflows]]
name = "remote"
binding = "REMOTE"
class_name = "Other"
script_name = "billing"
concurrency = {{ limit = 3 }}
"""


def test_stepstone_toml_carries_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "stepstone.toml"
    path.write_text(STEPSTONE.format(extra="concurrency = { limit = 7 }"))
    assert load_project(path).workflows[0].concurrency_limit == 7
    path.write_text(STEPSTONE.format(extra=""))
    assert load_project(path).workflows[0].concurrency_limit is None


@pytest.mark.parametrize(
    "extra", ["concurrency = { limit = 0 }", 'concurrency = { limit = "7" }', "concurrency = 7"]
)
def test_stepstone_toml_refuses_a_bad_limit(tmp_path: Path, extra: str) -> None:
    path = tmp_path / "stepstone.toml"
    path.write_text(STEPSTONE.format(extra=extra))
    with pytest.raises(ProjectConfigError, match="concurrency"):
        load_project(path)


def test_wrangler_refuses_a_limit_on_another_workers_workflow(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "entry.py").write_text("")
    path = tmp_path / "wrangler.toml"
    path.write_text(WRANGLER.format())
    with pytest.raises(ProjectConfigError, match="another Worker"):
        load_wrangler(path)
