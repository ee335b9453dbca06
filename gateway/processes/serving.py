"""What every serving process shares: the ingest pipeline (and in some, the OTLP/gRPC server)
started in the process that serves, and the one shutdown path."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

import storage
from gateway.heap import settle_heap
from gateway.otlp import runtime
from gateway.otlp.grpc_server import server_from_settings

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
