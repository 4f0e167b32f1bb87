"""Session fixtures: Cloudflare's local engine with the JS workflows, Stepstone with the twins.

The oracle (Node from PyPI, wrangler from npm) is installed into a cache folder outside the
checkout on first use (``oracle.cache_root()``); when it cannot be installed or started, every
conformance test skips with the reason.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.api.conftest import ACCOUNT, LiveServer, start_server
from tests.conformance import oracle
from tests.conformance.sides import (
    JS_WORKFLOWS,
    TWINS,
    Side,
    class_names,
    oracle_side,
    stepstone_side,
    workflow_name,
    wrangler_config,
)


@pytest.fixture(scope="session")
def local_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[oracle.LocalEngine]:
    try:
        toolchain = oracle.install()
    except oracle.OracleUnavailable as exc:
        pytest.skip(f"Cloudflare's local engine could not be installed: {exc}")
    project = tmp_path_factory.mktemp("cloudflare-local")
    shutil.copy(JS_WORKFLOWS, project / JS_WORKFLOWS.name)
    (project / "wrangler.json").write_text(json.dumps(wrangler_config(), indent=2))
    engine = oracle.LocalEngine(toolchain, project, project / "state")
    try:
        engine.start()
    except oracle.OracleUnavailable as exc:
        pytest.skip(f"Cloudflare's local engine could not start: {exc}")
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def stepstone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    db = tmp_path_factory.mktemp("stepstone-conformance") / "conformance.db"
    live, stop = start_server(f"sqlite:///{db}")
    try:
        for name in class_names():
            with live.http() as client:
                answer = client.put(
                    f"/accounts/{ACCOUNT}/workflows/{workflow_name(name)}",
                    json={"class_name": name, "script_name": TWINS},
                )
                assert answer.status_code == 200, answer.text
        yield live
    finally:
        stop()


@pytest.fixture(scope="session")
def sides(
    local_engine: oracle.LocalEngine, stepstone_server: LiveServer
) -> Iterator[tuple[Side, Side]]:
    """(Cloudflare's local engine, Stepstone): the same routes on each."""
    with stepstone_server.http() as client:
        yield oracle_side(local_engine), stepstone_side(client, f"/accounts/{ACCOUNT}")


@pytest.fixture(scope="session")
def pair() -> Iterator[ThreadPoolExecutor]:
    """Runs a scenario on both engines at once: the suite's wall time is the slower side's."""
    with ThreadPoolExecutor(2) as pool:
        yield pool
