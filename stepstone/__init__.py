"""Stepstone: Cloudflare Workflows, self-hosted, for Python.

Everything a workflow author or an embedding program needs is importable from here.
"""

from stepstone.authoring.config import RetryConfig, StepConfig
from stepstone.authoring.durations import parse_duration
from stepstone.authoring.entrypoint import WorkflowEntrypoint, WorkflowEvent
from stepstone.authoring.step import WorkflowStep
from stepstone.embedded import Engine, Env, InstanceHandle, WorkflowBinding
from stepstone.engine.worker import WorkerSettings
from stepstone.errors import (
    NondeterminismError,
    NonRetryableError,
    StepError,
    StepstoneError,
    WorkflowFatalError,
    WorkflowTimeoutError,
)
from stepstone.model.version import VERSION

__version__ = VERSION

__all__ = [
    "Engine",
    "Env",
    "InstanceHandle",
    "NonRetryableError",
    "NondeterminismError",
    "RetryConfig",
    "StepConfig",
    "StepError",
    "StepstoneError",
    "WorkerSettings",
    "WorkflowBinding",
    "WorkflowEntrypoint",
    "WorkflowEvent",
    "WorkflowFatalError",
    "WorkflowStep",
    "WorkflowTimeoutError",
    "__version__",
    "parse_duration",
]
