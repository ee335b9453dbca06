"""The gunicorn application every HTTP process runs, and the worker hooks that start and stop
its ingest side. The arbiter (gunicorn's parent process) imports only this, gunicorn and the
settings: what serves requests is loaded in the workers it forks, not in the parent, which
stays small (gateway.processes.all_in_one and http_server exec a fresh interpreter for it)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from gunicorn.app.base import BaseApplication

from gateway.tls import TlsConfig

if TYPE_CHECKING:
    from gateway.processes.serving import Serving


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
    from gateway.processes.serving import Serving

    worker.otlp_serving = serving = Serving.start(with_grpc=with_grpc)
    return serving


def stop_in_worker(server, worker) -> None:
    """gunicorn's worker_exit."""
    serving = getattr(worker, "otlp_serving", None)  # absent when the worker failed to start
    if serving is not None:
        serving.stop(grace_seconds=5)


def workers_argument(argv: list[str], description: str) -> int:
    """`--workers N` of `python -m gateway.processes <process>`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workers", type=int, required=True)
    return parser.parse_args(argv).workers


def exec_module(module: str, *, workers: int) -> None:
    """Replace this process (a manage.py command, with all of Django loaded) by a fresh
    interpreter running only `module`'s gunicorn (gateway/processes/__main__.py): its arbiter
    then holds ~40 MB, not ~110. The same pid, so signals and the container's init see no
    difference."""
    project = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")]))}
    name = module.rpartition(".")[2]
    os.execve(sys.executable, [sys.executable, "-m", "gateway.processes", name, "--workers", str(workers)], env)
