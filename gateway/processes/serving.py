"""What every serving process shares: the ingest pipeline (and in some, the OTLP/gRPC server)
started in the process that serves, the one shutdown path, and the gunicorn application."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from django.conf import settings
from gunicorn.app.base import BaseApplication

import storage
from gateway.heap import settle_heap
from gateway.otlp import runtime
from gateway.otlp.grpc_server import server_from_settings
from gateway.tls import TlsConfig

log = logging.getLogger("gateway.processes")

# Seconds calls in flight get to finish on shutdown; below Kubernetes' default 30s grace.
STOP_GRACE_SECONDS = 20


@dataclass
class Serving:
    """The ingest side of one serving process."""

    grpc_server: grpc.Server | None = None
    grpc_port: int | None = None

    @classmethod
    def start(cls, *, with_grpc: bool) -> Serving:
        """Open storage here, in the process that serves (it migrates when
        GATEWAY_MIGRATE_ON_START says so), build the pipeline and, `with_grpc`, start the
        OTLP/gRPC server."""
        runtime.install_pipeline(runtime.build_pipeline())
        serving = cls()
        if with_grpc:
            serving.grpc_server, serving.grpc_port = server_from_settings()
            serving.grpc_server.start()
        settle_heap()
        return serving

    def stop(self, *, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """Let gRPC calls in flight finish, store what is queued, close storage: in that order,
        so that nothing acknowledged is left unstored."""
        if self.grpc_server is not None:
            self.grpc_server.stop(grace=grace_seconds).wait(grace_seconds + 5)
        pipeline = runtime.install_pipeline(None)
        if pipeline is not None:
            pipeline.stop()
        store = storage.install_store(None)
        if store is not None:
            store.close()


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
    """gunicorn as every HTTP process runs it; each process adds its own hooks."""
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
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        # gunicorn's control socket sits in $HOME and would collide between instances.
        "control_socket_disable": True,
        # TLS (and mutual TLS) for OTLP/HTTP and the console: certfile, keyfile, ca_certs, cert_reqs.
        **(tls.gunicorn_options() if tls is not None else {}),
    }


def start_in_worker(worker, *, with_grpc: bool) -> Serving:
    """gunicorn's post_worker_init: the worker, not the parent that forks it, owns storage."""
    worker.otlp_serving = serving = Serving.start(with_grpc=with_grpc)
    return serving


def stop_in_worker(server, worker) -> None:
    """gunicorn's worker_exit."""
    serving = getattr(worker, "otlp_serving", None)  # absent when the worker failed to start
    if serving is not None:
        serving.stop(grace_seconds=5)
