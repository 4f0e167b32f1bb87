"""Operations: the commands and queries every front-end shares (``Operations``), the checks
of their input, and restarts. Front-ends read and write only through these."""

from stepstone.ops.inputs import (
    MAX_BATCH,
    CreateRequest,
    check_payload_size,
    encode_payload,
    retention_ms,
)
from stepstone.ops.queries import Queries
from stepstone.ops.restarts import (
    ABORTED_BY_RESTART,
    ABORTED_BY_TERMINATE,
    RESTART_TYPES,
    RestartFrom,
    end_running_attempts,
    restart_cut,
)
from stepstone.ops.service import Operations

__all__ = [
    "ABORTED_BY_RESTART",
    "ABORTED_BY_TERMINATE",
    "MAX_BATCH",
    "RESTART_TYPES",
    "CreateRequest",
    "Operations",
    "Queries",
    "RestartFrom",
    "check_payload_size",
    "encode_payload",
    "end_running_attempts",
    "restart_cut",
    "retention_ms",
]
