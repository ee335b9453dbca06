"""The all-in-one process (manage.py serve): gunicorn, one worker with threads, serving
OTLP/HTTP and the console, with the OTLP/gRPC server and the storage batcher started inside
that same worker, because in the embedded mode one process owns the chDB data directory."""

from __future__ import annotations

import logging
import os

from django.conf import settings

from gateway.processes.gunicorn_app import (
    GatewayApplication,
    exec_module,
    gunicorn_options,
    start_in_worker,
    stop_in_worker,
    workers_argument,
)

log = logging.getLogger("gateway.processes.all_in_one")


def _post_worker_init(worker) -> None:
    serving = start_in_worker(worker, with_grpc=True)
    log.info("OTLP/gRPC listening on %s:%s (worker pid %s)", settings.GATEWAY_HOST, serving.grpc_port, os.getpid())


def options(*, workers: int) -> dict:
    return {
        **gunicorn_options(workers=workers),
        "post_worker_init": _post_worker_init,
        "worker_exit": stop_in_worker,
        "proc_name": "otlp-gateway",
    }


def run(*, workers: int = 1) -> None:
    GatewayApplication(options(workers=workers)).run()


def exec_process(*, workers: int) -> None:
    exec_module(__name__, workers=workers)


def main(argv: list[str]) -> None:
    run(workers=workers_argument(argv, __doc__.splitlines()[0]))
