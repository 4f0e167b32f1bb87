import pytest

from stepstone import RetryConfig, StepConfig
from stepstone.authoring.config import resolve_config
from stepstone.errors import WorkflowFatalError


def test_defaults_follow_cloudflare_production() -> None:
    config = resolve_config(None, "s")
    assert config.recorded() == {
        "retries": {"limit": 5, "delay": 10_000, "backoff": "exponential"},
        "timeout": "10 minutes",
    }
    assert config.timeout_ms == 600_000


def test_merge_is_per_key_and_keeps_the_given_forms() -> None:
    config = resolve_config({"retries": {"limit": 2, "delay": "5 seconds"}, "timeout": 30}, "s")
    assert config.recorded()["retries"] == {
        "limit": 2,
        "delay": "5 seconds",
        "backoff": "exponential",
    }
    assert config.delay == 5_000
    assert config.timeout_ms == 30


def test_dataclass_form_and_sensitive() -> None:
    config = resolve_config(
        StepConfig(retries=RetryConfig(limit=1, delay=100, backoff="linear"), sensitive="output"),
        "s",
    )
    assert config.sensitive
    assert config.recorded()["sensitive"] == "output"
    assert config.backoff == "linear"


def test_delay_function_is_recorded_as_dynamic() -> None:
    config = resolve_config({"retries": {"limit": 1, "delay": lambda ctx, err: 5}}, "s")
    assert config.recorded()["retries"]["delay"] == "[dynamic]"
    assert callable(config.delay)


@pytest.mark.parametrize(
    "bad",
    [
        {"retry": {}},
        {"retries": {"limit": 1}},
        {"retries": {"delay": 1}},
        {"retries": {"limit": -1, "delay": 1}},
        {"retries": {"limit": 10_001, "delay": 1}},
        {"retries": {"limit": True, "delay": 1}},
        {"retries": {"limit": 1, "delay": "soon"}},
        {"retries": {"limit": 1, "delay": 1, "backoff": "random"}},
        {"retries": {"limit": 1, "delay": 1, "jitter": True}},
        {"timeout": 0},
        {"timeout": "forever"},
        {"sensitive": "input"},
        "not a dict",
    ],
)
def test_invalid_configs_are_fatal_with_the_step_name(bad: object) -> None:
    with pytest.raises(WorkflowFatalError, match='Step config for "charge"'):
        resolve_config(bad, "charge")
