"""`stepstone instances describe` names a child workflow's parent and a parent's children
(issue 17), from the API's extension key."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import start_server

CONFIG = """
[[workflows]]
name = "parent"
class_name = "Parent"
script_name = "tests.engine.test_children"

[[workflows]]
name = "doubler"
class_name = "Doubler"
script_name = "tests.engine.test_children"
"""


def test_describe_names_the_parent_and_the_children(tmp_path: Path, cli_db_url: str | None) -> None:
    (tmp_path / "stepstone.toml").write_text(CONFIG)
    server = start_server(tmp_path, "--insecure-no-auth", db=cli_db_url)
    try:
        server.run("workflows", "trigger", "parent", "{}", "--id", "p1")
        server.wait_status("parent", "p1", "complete")
        parent = server.run("instances", "describe", "parent", "p1").out
        [line] = [text for text in parent.splitlines() if text.startswith("Child")]
        child_id = line.split("doubler/")[1].split(" ")[0]
        assert "(complete)" in line
        child = server.run("instances", "describe", "doubler", child_id).out
        assert any(
            text.startswith("Parent") and "parent/p1 (complete)" in text
            for text in child.splitlines()
        ), child
    finally:
        server.stop()
