"""The production HTTP process (manage.py serve_http): gunicorn serving OTLP/HTTP, the console,
the API, health and metrics with one worker per CPU the container may use, against a ClickHouse
server. Each worker has its own pipeline and batcher; OTLP/gRPC runs in its own process
(gateway.processes.grpc_server), and migrations run once, before, in a Job
(GATEWAY_MIGRATE_ON_START is false for a server URL).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

from django.conf import settings

from gateway.processes.gunicorn_app import (
    GatewayApplication,
    exec_module,
    gunicorn_options,
    start_in_worker,
    stop_in_worker,
    workers_argument,
)
from storage.host import available_cpus

log = logging.getLogger("gateway.processes.http_server")


def default_workers() -> int:
    return settings.GATEWAY_HTTP_WORKERS or available_cpus()


def _post_worker_init(worker) -> None:
    # Connecting is lazy: a worker starts even while ClickHouse is down (/readyz says so).
    start_in_worker(worker, with_grpc=False)
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


def options(*, workers: int) -> dict:
    options = {
        **gunicorn_options(workers=workers),
        "post_worker_init": _post_worker_init,
        "worker_exit": stop_in_worker,
        "on_starting": _on_starting,
        "child_exit": _child_exit,
        "logconfig_dict": logconfig(),
        "proc_name": "otlp-gateway-http",
    }
    if os.access("/dev/shm", os.W_OK):
        options["worker_tmp_dir"] = "/dev/shm"  # worker heartbeats in memory, not on a disk that may stall
    return options


def run(*, workers: int) -> None:
    GatewayApplication(options(workers=workers)).run()


def exec_process(*, workers: int) -> None:
    exec_module(__name__, workers=workers)


def main(argv: list[str]) -> None:
    run(workers=workers_argument(argv, __doc__.splitlines()[0]))
