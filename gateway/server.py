"""The all-in-one process: gunicorn (one worker, threads) serving OTLP/HTTP and the console,
with the OTLP/gRPC server and the storage batcher started inside that same worker, because in
the embedded mode one process owns the chDB data directory."""
from __future__ import annotations

import logging
import os

from django.conf import settings
from gunicorn.app.base import BaseApplication

from gateway.otlp import runtime
from gateway.otlp.grpc_server import server_from_settings
from gateway.tls import TlsConfig

log = logging.getLogger("gateway.server")


def _post_worker_init(worker) -> None:
    pipeline = runtime.build_pipeline()  # opens ClickHouse here, in the worker, and migrates
    runtime.install_pipeline(pipeline)
    server, port = server_from_settings()
    server.start()
    worker.otlp_grpc_server = server
    runtime.settle_heap()
    log.info("OTLP/gRPC listening on %s:%s (worker pid %s)", settings.GATEWAY_HOST, port, os.getpid())


def _worker_exit(server, worker) -> None:
    grpc_server = getattr(worker, "otlp_grpc_server", None)
    if grpc_server is not None:
        grpc_server.stop(grace=5).wait(10)
    pipeline = runtime.install_pipeline(None)
    if pipeline is not None:
        pipeline.stop()  # stores what is queued before the process ends
        pipeline.batcher.store.close()


class GatewayApplication(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # e.g. control_socket_disable exists only in newer gunicorn
                self.cfg.set(key, value)

    def load(self):
        from gateway.wsgi import application

        return application


def gunicorn_options(*, workers: int) -> dict:
    tls = TlsConfig.from_settings()
    return {
        "bind": [f"{settings.GATEWAY_HOST}:{settings.GATEWAY_HTTP_PORT}"],
        "workers": workers,
        # An asyncio front (gateway/edge.py): slow and idle clients hold no thread.
        "worker_class": "gateway.edge.EdgeWorker",
        "threads": settings.GATEWAY_HTTP_THREADS,
        "timeout": 60,
        "graceful_timeout": 20,
        "max_requests": 0,  # a restart would hand the chDB directory to a new process mid-flight
        "post_worker_init": _post_worker_init,
        "worker_exit": _worker_exit,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "otlp-gateway",
        # gunicorn's control socket sits in $HOME and would collide between instances.
        "control_socket_disable": True,
        # TLS (and mutual TLS) for OTLP/HTTP and the console: certfile, keyfile, ca_certs, cert_reqs.
        **(tls.gunicorn_options() if tls is not None else {}),
    }


def run(*, workers: int = 1) -> None:
    GatewayApplication(gunicorn_options(workers=workers)).run()
