"""The process's Prometheus series, on prometheus_client's default registry.

prometheus_client rather than the OpenTelemetry SDK's Prometheus exporter: it is a plain
dependency with no exporter pipeline, an observation is a lock and an add (about 1 us), and the
text format it writes is the reference one. Traces stay an optional extra (``tracing.py``).

Counters and histograms are per process; Prometheus sums them across workers. Series that
describe the shared store (instances by status, queue depth) are read from it by
``store_gauges`` at scrape time instead, so that several processes never disagree.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "render"]

# Step attempts and HTTP answers: 1 ms to 5 min.
_DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip
# Commits and fsyncs: 10 us to 1 s.
_STORAGE_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 1,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

INSTANCES_CREATED = Counter(
    "stepstone_instances_created", "Instances created by this process.", ["workflow"]
)
INSTANCES_ENDED = Counter(
    "stepstone_instances_ended",
    "Instances that reached an end status here: complete, errored or terminated.",
    ["workflow", "status"],
)
STEP_ATTEMPT_SECONDS = Histogram(
    "stepstone_step_attempt_seconds",
    "Duration of step attempts run by this process, by outcome (success, error).",
    ["workflow", "outcome"],
    buckets=_DURATION_BUCKETS,
)
STEP_RETRIES = Counter(
    "stepstone_step_retries", "Failed step attempts that will be retried.", ["workflow"]
)
ACTIVATIONS = Counter(
    "stepstone_activations", "Activations (claims) run by this process.", ["workflow"]
)
LEASE_TAKEOVERS = Counter(
    "stepstone_lease_takeovers",
    "Activations of this process whose instance another claim took over (its lease expired,"
    " or an operator's stop fenced it).",
)
WAKEUP_LAG_SECONDS = Histogram(
    "stepstone_wakeup_lag_seconds",
    "From the time an instance became due to the start of its activation: its creation for a"
    " first activation, else the sleep, wait timeout or retry that woke it.",
    buckets=_LAG_BUCKETS,
)
STORAGE_COMMIT_SECONDS = Histogram(
    "stepstone_storage_commit_seconds",
    "Duration of a write's commit: SQLite's COMMIT; on PostgreSQL the round trip of a write"
    " statement (each runs in its own implicit transaction).",
    ["store"],
    buckets=_STORAGE_BUCKETS,
)
STORAGE_FSYNC_SECONDS = Histogram(
    "stepstone_storage_fsync_seconds",
    "Duration of an fdatasync of the SQLite WAL.",
    buckets=_STORAGE_BUCKETS,
)
GROUP_COMMIT_BATCH = Histogram(
    "stepstone_group_commit_batch_size",
    "Writes that shared one commit (creates, step results, activation ends).",
    ["store"],
    buckets=_BATCH_BUCKETS,
)
# Bound once: the storage hot paths observe without a label lookup.
SQLITE_COMMIT = STORAGE_COMMIT_SECONDS.labels("sqlite")
POSTGRES_COMMIT = STORAGE_COMMIT_SECONDS.labels("postgres")
SQLITE_BATCH = GROUP_COMMIT_BATCH.labels("sqlite")
POSTGRES_BATCH = GROUP_COMMIT_BATCH.labels("postgres")
HTTP_REQUESTS = Counter(
    "stepstone_http_requests", "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
)  # fmt: skip
HTTP_SECONDS = Histogram(
    "stepstone_http_request_seconds",
    "Time to answer an HTTP request (to the start of the body for streams).",
    ["method", "route"],
    buckets=_DURATION_BUCKETS,
)


class _Slots(Protocol):
    @property
    def active_count(self) -> int: ...

    @property
    def slot_limit(self) -> int: ...


class _WorkerSlots(Collector):
    """Concurrency slots in use and the limit, summed over this process's live workers; read
    at scrape time, so nothing is counted on the hot path."""

    def __init__(self) -> None:
        self.workers: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        workers = list(self.workers)
        used = GaugeMetricFamily(
            "stepstone_worker_slots_used", "Instances this process's workers are running now."
        )
        used.add_metric([], sum(w.active_count for w in workers))
        limit = GaugeMetricFamily(
            "stepstone_worker_slots_limit", "Instances this process's workers may run at once."
        )
        limit.add_metric([], sum(w.slot_limit for w in workers))
        yield used
        yield limit


_SLOTS = _WorkerSlots()
REGISTRY.register(_SLOTS)


def track_worker(worker: _Slots) -> None:
    _SLOTS.workers.add(worker)


def untrack_worker(worker: _Slots) -> None:
    _SLOTS.workers.discard(worker)


def instance_ended(workflow: str, status: str) -> None:
    if status in ("complete", "errored", "terminated"):
        INSTANCES_ENDED.labels(workflow, status).inc()


# labels() takes a lock and builds a key; a dict lookup per attempt is a tenth of that.
_attempt_children: dict[tuple[str, str], Any] = {}


def attempt_done(workflow: str, outcome: str, started: float) -> None:
    elapsed = time.perf_counter() - started
    child = _attempt_children.get((workflow, outcome))
    if child is None:
        child = _attempt_children[(workflow, outcome)] = STEP_ATTEMPT_SECONDS.labels(
            workflow, outcome
        )
    child.observe(elapsed)


def render(extra: Any = None) -> bytes:
    """The registry in the text format; ``extra`` (a collector of store gauges) is added."""
    body = generate_latest(REGISTRY)
    if extra is not None:
        from prometheus_client import CollectorRegistry

        store = CollectorRegistry(auto_describe=False)
        store.register(extra)
        body += generate_latest(store)
    return body
