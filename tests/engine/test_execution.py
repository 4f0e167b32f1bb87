"""Steps run once, retry per policy, time out per attempt, and fail the way the spec says."""

from __future__ import annotations

import orjson
import pytest

from stepstone import Engine
from stepstone.errors import InstanceAlreadyExists, InvalidInstanceId, WorkflowNotFound
from tests.engine import flows
from tests.engine.conftest import steps_of, wait_for


async def test_sequential_steps_run_once_and_return_the_output(engine: Engine) -> None:
    handle = await engine.workflow("sequential").create(id="seq", params={"n": 5})
    status = await handle.wait(10)
    assert status == {
        "status": "complete",
        "error": None,
        "output": {"total": 10},
        "rollback": None,
    }
    assert [flows.CALLS[f"seq-seq-{i}"] for i in range(5)] == [1] * 5
    steps = await steps_of(engine, "sequential", "seq")
    assert [name for kind, name in steps] == [f"add-{i}" for i in range(1, 6)]


async def test_wait_hears_the_end_of_an_instance_without_polling(engine: Engine) -> None:
    handle = await engine.workflow("sequential").create(params={"n": 2})
    # A poll interval longer than the timeout: only the end's notification can finish this.
    status = await handle.wait(timeout=5, poll=60)
    assert status["status"] == "complete"
    assert status["output"] == {"total": 1}


async def test_retries_until_success_recording_every_attempt(engine: Engine) -> None:
    handle = await engine.workflow("flaky").create(id="f1", params={"failures": 2})
    assert (await handle.wait(10))["output"] == {"attempt": 3}
    record = (await steps_of(engine, "flaky", "f1"))[("do", "flaky-1")]
    assert [a.success for a in record.attempts] == [False, False, True]
    assert record.attempts[0].error == {"name": "ConnectionError", "message": "attempt 1 failed"}
    assert record.attempts[1].start - record.attempts[0].end >= 20  # the constant 20 ms delay
    assert flows.CALLS["flaky-f1"] == 3
    _, instance = await engine.ops.instance("default", "flaky", "f1")
    errored = [
        (e.ts, orjson.loads(e.data or b""))
        for e in await engine.storage.load_events(instance.pk)
        if e.type == "attempt_errored"
    ]
    # What the record says of each retry agrees with itself: retryAt is its time + the delay.
    assert [data["retryAt"] - ts for ts, data in errored] == [20, 20]
    assert [data["retryDelayMs"] for _, data in errored] == [20, 20]


async def test_exhausted_retries_raise_into_run_where_code_can_catch(engine: Engine) -> None:
    handle = await engine.workflow("flaky").create(id="f2", params={"failures": 10})
    assert (await handle.wait(10))["output"] == {"gave_up": "attempt 4 failed"}
    assert flows.CALLS["flaky-f2"] == 4  # limit 3 = 4 attempts in all


async def test_non_retryable_error_stops_at_once_and_errors_the_instance(engine: Engine) -> None:
    handle = await engine.workflow("nonretryable").create(id="n1")
    status = await handle.wait(10)
    assert status["status"] == "errored"
    assert status["error"] == {"name": "NonRetryableError", "message": "card declined"}
    assert flows.CALLS["refuse-n1"] == 1


async def test_timeout_applies_per_attempt_and_is_retried(engine: Engine) -> None:
    handle = await engine.workflow("slow").create(id="t1")
    assert (await handle.wait(10))["output"] == "second attempt in time"
    record = (await steps_of(engine, "slow", "t1"))[("do", "slow-1")]
    assert record.attempts[0].error == {
        "name": "WorkflowTimeoutError",
        "message": "Execution timed out after 100ms",
    }


async def test_gathered_steps_get_deterministic_names(engine: Engine) -> None:
    handle = await engine.workflow("gathered").create(id="g1")
    assert (await handle.wait(10))["output"] == [0, 1, 2, 3, 4]
    names = sorted(name for _, name in await steps_of(engine, "gathered", "g1"))
    assert names == [f"part-{i}" for i in range(1, 6)]


async def test_decorator_form_injects_dependencies_ctx_and_memoises(engine: Engine) -> None:
    handle = await engine.workflow("decorated").create(id="d1")
    output = (await handle.wait(10))["output"]
    assert output == {
        "square": {"value": 4, "step": {"name": "square", "count": 1}, "attempt": 1},
        "cube": 8,
        "base": 2,
    }
    assert flows.CALLS["base-d1"] == 1  # three callers, one execution


async def test_unknown_decorator_parameter_is_a_type_error(engine: Engine) -> None:
    handle = await engine.workflow("bad-parameter").create(id="b1")
    assert (await handle.wait(10))["output"] == "Received unexpected parameter nobody"


async def test_unserialisable_output_fails_the_instance_without_retry(engine: Engine) -> None:
    handle = await engine.workflow("unserialisable").create(id="u1")
    status = await handle.wait(10)
    assert status["status"] == "errored"
    assert status["error"]["name"] == "WorkflowFatalError"
    assert "not serialisable" in status["error"]["message"]
    assert flows.CALLS["unserialisable-u1"] == 1


async def test_step_limit_fails_the_instance(engine: Engine) -> None:
    handle = await engine.workflow("many-steps").create(id="m1", params={"n": 51})
    status = await handle.wait(10)
    assert status["status"] == "errored"
    assert status["error"] == {
        "name": "WorkflowFatalError",
        "message": "The limit of 50 steps has been reached for this instance",
    }
    ok = await engine.workflow("many-steps").create(id="m2", params={"n": 50})
    assert (await ok.wait(10))["status"] == "complete"


async def test_byte_streams_are_stored_in_chunks_and_replay_as_the_same_bytes(
    engine: Engine,
) -> None:
    handle = await engine.workflow("streams").create(id="s1", params={"size": 600 * 1024})
    await wait_for(handle, "waiting")
    await handle.send_event(type="go", payload=None)  # the replay must rebuild both streams
    output = (await handle.wait(10))["output"]
    assert output == {"raw": 600 * 1024, "raw_ok": True, "streamed": 12_000}
    steps = await steps_of(engine, "streams", "s1")
    assert steps[("do", "raw-1")].stream == {"bytes": 600 * 1024, "chunks": 3, "form": "bytes"}
    _, record = await engine.ops.instance("default", "streams", "s1")
    data = b"".join([c async for c in engine.storage.read_stream(record.pk, "raw-1", 3)])
    assert data == bytes(range(256)) * (600 * 1024 // 256)


async def test_env_gives_bindings_and_values(engine: Engine) -> None:
    handle = await engine.workflow("parent").create(id="p1")
    assert (await handle.wait(10))["output"] == {"child": "child-of-p1", "setting": "hello"}
    child = await engine.workflow("sequential").get("child-of-p1")
    assert (await child.wait(10))["output"] == {"total": 1}
    _, record = await engine.ops.instance("default", "sequential", "child-of-p1")
    assert record.trigger_source == "binding"


async def test_creation_rules(engine: Engine) -> None:
    binding = engine.workflow("sequential")
    await binding.create(id="dup", params={"n": 0})
    with pytest.raises(InstanceAlreadyExists):
        await binding.create(id="dup", params={"n": 0})
    created = await binding.create_batch([{"id": "dup"}, {"id": "new-one", "params": {"n": 1}}])
    assert [h.id for h in created] == ["new-one"]
    with pytest.raises(InvalidInstanceId):
        await binding.create(id="has space")
    with pytest.raises(InvalidInstanceId):
        await binding.create(id="cf_" + "a" * 64)
    with pytest.raises(WorkflowNotFound):
        await engine.workflow("nope").create()
    generated = await binding.create(params={"n": 0})
    assert len(generated.id) == 36
    _, record = await engine.ops.instance("default", "sequential", "new-one")
    assert orjson.loads(record.params) == {"n": 1}


async def test_a_delay_function_is_called_with_the_error_and_recorded_as_dynamic(
    engine: Engine,
) -> None:
    handle = await engine.workflow("dynamic-delay").create(id="dd")
    # The second attempt runs in a new activation: only its own ctx is in the output.
    assert (await handle.wait(10))["output"] == [["backoff", "limit"]]
    record = (await steps_of(engine, "dynamic-delay", "dd"))[("do", "flaky-1")]
    assert record.config is not None
    assert record.config["retries"]["delay"] == "[dynamic]"
    first, second = record.attempts
    assert first.success is False and second.success is True
    assert first.end is not None and second.start - first.end >= 30
