"""Reading a Cloudflare project: wrangler.toml / .jsonc / .json, .dev.vars, discovery, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stepstone.cloudflare.config import implicit_dependencies
from stepstone.cloudflare.jsonc import loads as jsonc_loads
from stepstone.project import ProjectConfigError, find_project_file, load_project

ENTRY = "from workers import WorkflowEntrypoint\n\n\nclass Flow(WorkflowEntrypoint):\n    pass\n"


def project(folder: Path, name: str, text: str) -> Path:
    (folder / "src").mkdir(exist_ok=True)
    (folder / "src" / "entry.py").write_text(ENTRY)
    path = folder / name
    path.write_text(text)
    return path


TOML = """
name = "shop"
main = "src/entry.py"
compatibility_date = "2025-08-01"
compatibility_flags = ["python_workers", "python_workflows"]

[[workflows]]
name = "orders"
binding = "ORDERS"
class_name = "Flow"
limits = { steps = 500 }
concurrency = { limit = 4 }
schedules = "0 2 * * *"

[[workflows]]
name = "remote"
binding = "REMOTE"
class_name = "Other"
script_name = "billing.flows"

[vars]
API_URL = "https://example.com"
RETRIES = 3

[triggers]
crons = ["*/5 * * * *"]
"""


def test_wrangler_toml_gives_workflows_bindings_vars_and_crons(tmp_path: Path) -> None:
    config = load_project(project(tmp_path, "wrangler.toml", TOML))
    orders, remote = config.workflows
    assert (orders.name, orders.class_name, orders.script_name) == ("orders", "Flow", "entry")
    assert (orders.limits_steps, orders.concurrency_limit, orders.schedules) == (
        500,
        4,
        ("0 2 * * *",),
    )
    assert remote.script_name == "billing.flows"
    assert config.bindings == {"ORDERS": "orders", "REMOTE": "remote"}
    assert config.env == {"API_URL": "https://example.com", "RETRIES": 3}
    assert config.crons == ("*/5 * * * *",)
    assert config.root == (tmp_path / "src").resolve()
    assert config.main_module == "entry"
    assert config.name == "shop"
    # 2025-08-01 is before the date the implicit signature became the default.
    assert config.implicit_dependencies is False


def test_jsonc_with_comments_and_trailing_commas_and_dev_vars(tmp_path: Path) -> None:
    text = """{
      // the Worker
      "name": "shop", /* inline */ "main": "src/entry.py",
      "compatibility_flags": ["python_workflows_implicit_dependencies",],
      "workflows": [
        {"name": "orders", "binding": "ORDERS", "class_name": "Flow", "script_name": "shop",},
      ],
      "vars": {"URL": "http://x//y", /* not a comment inside a string: "//" */},
    }"""
    (tmp_path / ".dev.vars").write_text(
        "# secrets\nAPI_KEY=abc123\nexport QUOTED=\"two words\"\nSINGLE='x # y'\nURL=override\n"
    )
    config = load_project(project(tmp_path, "wrangler.jsonc", text))
    # script_name naming this Worker itself means its main module.
    assert config.workflows[0].script_name == "entry"
    assert config.env == {
        "URL": "override",
        "API_KEY": "abc123",
        "QUOTED": "two words",
        "SINGLE": "x # y",
    }
    assert config.implicit_dependencies is True


def test_wrangler_json_is_plain_json(tmp_path: Path) -> None:
    text = (
        '{"main": "src/entry.py",'
        ' "workflows": [{"name": "a", "binding": "A", "class_name": "Flow"}]}'
    )
    config = load_project(project(tmp_path, "wrangler.json", text))
    assert config.workflows[0].script_name == "entry"


def test_unknown_keys_are_ignored_with_one_warning_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = (
        TOML + '\n[[kv_namespaces]]\nbinding = "KV"\nid = "x"\n\n[observability]\nenabled = true\n'
    )
    text = text.replace('binding = "ORDERS"', 'binding = "ORDERS"\njurisdiction = "eu"')
    with caplog.at_level(logging.WARNING, logger="stepstone.project"):
        load_project(project(tmp_path, "wrangler.toml", text))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "kv_namespaces" in warnings[0] and "observability" in warnings[0]
    assert "workflows[0].jurisdiction" in warnings[0]


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (("steps = 500", "steps = 0"), "workflows[0].limits.steps", "positive integer"),
        (("steps = 500", "steps = 30000"), "workflows[0].limits.steps", "at most 25000"),
        (("limit = 4", 'limit = "4"'), "workflows[0].concurrency.limit", "positive integer"),
        (('binding = "ORDERS"', 'binding = "my-binding"'), "workflows[0].binding", "identifier"),
        (('binding = "REMOTE"', 'binding = "ORDERS"'), "workflows[1].binding", "used twice"),
        (('name = "remote"', 'name = "orders"'), "workflows[1].name", "used twice"),
        (('class_name = "Flow"\n', ""), "workflows[0].class_name", "required"),
        (('main = "src/entry.py"', 'main = "src/missing.py"'), "main", "does not exist"),
        (('main = "src/entry.py"', 'main = "src/index.ts"'), "main", "Python module"),
        (('"2025-08-01"', '"tomorrow"'), "compatibility_date", "YYYY-MM-DD"),
        (('crons = ["*/5 * * * *"]', "crons = 5"), "triggers.crons", "list of strings"),
        (("RETRIES = 3\n", "RETRIES = 3\n[vars.x]\n"), None, None),
    ],
)
def test_invalid_values_name_the_file_the_key_and_the_reason(
    tmp_path: Path, change: tuple[str, str], key: str | None, reason: str | None
) -> None:
    assert change[0] in TOML
    path = project(tmp_path, "wrangler.toml", TOML.replace(change[0], change[1], 1))
    if key is None:
        load_project(path)  # a nested table in [vars] is a valid (JSON-like) value
        return
    with pytest.raises(ProjectConfigError) as caught:
        load_project(path)
    assert str(caught.value).startswith(f"{path}: {key}: ")
    assert reason is not None and reason in str(caught.value)


def test_a_workflow_without_script_name_needs_main(tmp_path: Path) -> None:
    path = tmp_path / "wrangler.toml"
    path.write_text('[[workflows]]\nname = "a"\nbinding = "A"\nclass_name = "Flow"\n')
    with pytest.raises(ProjectConfigError, match=r"workflows\[0\]\.script_name: no script_name"):
        load_project(path)


def test_broken_syntax_is_refused_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wrangler.jsonc"
    path.write_text('{"name": "x",, }')
    with pytest.raises(ProjectConfigError, match=r"wrangler\.jsonc"):
        load_project(path)


def test_discovery_order(tmp_path: Path) -> None:
    assert find_project_file(tmp_path) is None
    for name in ("stepstone.toml", "wrangler.json", "wrangler.jsonc", "wrangler.toml"):
        (tmp_path / name).write_text("")
        assert find_project_file(tmp_path) == tmp_path / name


def test_implicit_dependencies_follows_workerd() -> None:
    assert implicit_dependencies((), "2026-02-25") is True
    assert implicit_dependencies((), "2026-02-24") is False
    assert implicit_dependencies(("python_workflows_implicit_dependencies",), "2024-01-01")
    assert not implicit_dependencies(("no_python_workflows_implicit_dependencies",), "2027-01-01")
    assert implicit_dependencies((), None) is True  # wrangler uses today's date


def test_jsonc_keeps_strings_intact() -> None:
    assert jsonc_loads('{"a": "// no", "b": "/* no */", "c": "\\"//\\"",}') == {
        "a": "// no",
        "b": "/* no */",
        "c": '"//"',
    }
    assert jsonc_loads("[1, 2, // two\n]") == [1, 2]
