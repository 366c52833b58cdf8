"""Prometheus metrics, served on ``IMAGEBOT_METRICS_PORT`` when it is set (off by default).

One registry for the process. The counters and histograms are updated where
things happen (the service, the adapters, the backends); the queue gauges are
read at scrape time. The HTTP server is prometheus-client's own, in a thread,
so a scrape never waits on the event loop and the loop never waits on a scrape.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = [
    "ACK_SECONDS",
    "DESCRIPTIONS",
    "GENERATION_SECONDS",
    "JOBS",
    "REGISTRY",
    "REMOTE_RETRIES",
    "WORKER_RESTARTS",
    "serve",
    "watch_queue",
]

REGISTRY = CollectorRegistry()

JOBS = Counter("imagebot_jobs", "Jobs that ended, by how.", ["status"], registry=REGISTRY)
GENERATION_SECONDS = Histogram(
    "imagebot_generation_seconds",
    "Seconds a backend took to make a job's images.",
    ["backend"],
    buckets=(0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
ACK_SECONDS = Histogram(
    "imagebot_ack_seconds",
    "Seconds from a chat request reaching the bot to its acknowledgement.",
    ["platform"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3),
    registry=REGISTRY,
)
WORKER_RESTARTS = Counter(
    "imagebot_worker_restarts",
    "Local workers replaced after they died, ran out of memory or stalled.",
    registry=REGISTRY,
)
REMOTE_RETRIES = Counter(
    "imagebot_remote_retries",
    "Requests to a hosted API sent again after a transient failure.",
    ["backend"],
    registry=REGISTRY,
)
DESCRIPTIONS = Counter(
    "imagebot_descriptions",
    "Images described (/describe), by backend and how it ended (done, failed).",
    ["backend", "outcome"],
    registry=REGISTRY,
)
_QUEUE = Gauge("imagebot_jobs_in_queue", "Jobs queued or running now.", ["state"], registry=REGISTRY)


def watch_queue(waiting: Callable[[], int], running: Callable[[], int]) -> None:
    """Read the queue's sizes at each scrape."""
    _QUEUE.labels("queued").set_function(lambda: float(waiting()))
    _QUEUE.labels("running").set_function(lambda: float(running()))


def serve(host: str, port: int) -> None:
    """Serve ``/metrics`` on host:port in a background thread."""
    start_http_server(port, addr=host, registry=REGISTRY)
