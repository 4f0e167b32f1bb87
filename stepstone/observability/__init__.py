"""See inside a running Stepstone: Prometheus metrics, OpenTelemetry traces, structured logs.

Each concept is one module (metrics, store_gauges, tracing, logs, http); none of them changes
what an API client sees, and each costs the hot path an in-memory observation at most.
"""
