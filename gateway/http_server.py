"""The production HTTP process: gunicorn serving OTLP/HTTP, the console, the API, health and
metrics with one worker per CPU the container may use, against a ClickHouse server. Each
worker has its own pipeline and batcher; OTLP/gRPC runs in its own process (serve_grpc), and
migrations run once, before, in a Job (GATEWAY_MIGRATE_ON_START is false for a server URL).
"""
from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path

from django.conf import settings

from gateway.otlp import runtime
from gateway.server import GatewayApplication, _worker_exit, gunicorn_options

log = logging.getLogger("gateway.http_server")

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: the container's CPU limit (cgroup v2 or v1 quota), else the
    CPUs it is scheduled on. os.cpu_count() would say the node's, not the container's."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = None
    try:
        limit, period = (cgroup_root / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "200000 100000"
        if limit != "max":
            quota = int(limit) / int(period)
    except (OSError, ValueError):
        try:
            limit = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())  # v1: -1 when unlimited
            period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
            if limit > 0 and period > 0:
                quota = limit / period
        except (OSError, ValueError):
            pass
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def default_workers() -> int:
    return settings.GATEWAY_HTTP_WORKERS or available_cpus()


def _post_worker_init(worker) -> None:
    # Connecting is lazy: a worker starts even while ClickHouse is down (/readyz says so).
    runtime.install_pipeline(runtime.build_pipeline())
    runtime.settle_heap()
    log.info("OTLP/HTTP worker %s ready", os.getpid())


def _on_starting(server) -> None:
    # Metric files of a previous run would be summed in as if their workers were alive.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for path in Path(directory).glob("*.db"):
            path.unlink(missing_ok=True)


def _child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # drops its live gauges (queue depth)


def logconfig() -> dict:
    """gunicorn's own loggers go through the Django LOGGING handlers (JSON in production);
    per-request access lines stay off (the metrics count requests)."""
    config = copy.deepcopy(settings.LOGGING)
    config["loggers"] = {
        **config.get("loggers", {}),
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
    }
    return config


def production_options(*, workers: int) -> dict:
    options = gunicorn_options(workers=workers)
    options.update(
        post_worker_init=_post_worker_init,
        worker_exit=_worker_exit,
        on_starting=_on_starting,
        child_exit=_child_exit,
        logconfig_dict=logconfig(),
        proc_name="otlp-gateway-http",
    )
    if os.access("/dev/shm", os.W_OK):
        options["worker_tmp_dir"] = "/dev/shm"  # worker heartbeats in memory, not on a disk that may stall
    return options


def run(*, workers: int) -> None:
    GatewayApplication(production_options(workers=workers)).run()
