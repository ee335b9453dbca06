"""Hostile-client benchmark: starts `manage.py serve` on a fresh data directory and measures
(1) normal clients' latency (OTLP/HTTP exports, the console's login page, the REST API,
/healthz) with and without 200 slow sockets open (headers or a body sent a byte a second, and
idle connections), and (2) the gateway's RSS before, during and after 1,000 concurrent key-less
4 MiB OTLP/gRPC calls (and as many with a valid key and an undecodable 4 MiB body).

    ./dev bench-hostile [--slow 200] [--seconds 10] [--grpc-calls 1000] [--keep]

Every loop is bounded in count and time and talks only to the gateway it started on 127.0.0.1.
Exits 1 if a normal request failed or took longer than a second while the slow sockets were
open. Figures go to docs/BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import http.client
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from ingest import GRPC_METHOD, Gateway  # bench/, first on sys.path when this file runs
from otlp_payloads import build_request

HEAD = b"POST /v1/traces HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-protobuf\r\n"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class SlowSockets:
    """`count` connections that never finish a request: a third dribble their head a byte a
    second, a third declare a body and dribble it, a third stay idle."""

    def __init__(self, port: int, count: int):
        self.port, self.count = port, count
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()
        self.reconnects = 0

    def _open(self, kind: int) -> tuple[socket.socket, bytes]:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        if kind == 0:
            return sock, HEAD
        if kind == 1:
            sock.sendall(HEAD + b"Content-Length: 100000\r\n\r\n")
            return sock, b"\x0a" * 100000
        return sock, b""

    def run(self) -> None:
        plans = [list(self._open(i % 3)) + [0, i % 3] for i in range(self.count)]
        while not self.stop.wait(1.0):
            for plan in plans:
                sock, data, sent, kind = plan
                if not data:
                    continue
                try:
                    sock.send(data[sent : sent + 1])
                    plan[2] += 1
                except OSError:  # the gateway closed it (a deadline): open another of the same kind
                    sock.close()
                    self.reconnects += 1
                    plan[:] = list(self._open(kind)) + [0, kind]

    def __enter__(self):
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def normal_load(port: int, key: str, seconds: float, body: bytes) -> dict[str, list[float]]:
    """Four clients, one per kind of request, each sending one after another for `seconds`."""
    kinds = {
        "otlp": (
            "POST",
            "/v1/traces",
            body,
            {"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"},
        ),
        "console": ("GET", "/admin/login/", None, {}),
        "api": ("GET", "/api/v1/tenants/", None, {}),
        "healthz": ("GET", "/healthz", None, {}),
    }
    latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
    failures: list[str] = []
    deadline = time.monotonic() + seconds

    def client(kind: str) -> None:
        method, path, payload, headers = kinds[kind]
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request(method, path, body=payload, headers=headers)
                status = connection.getresponse().status
                connection.close()
            except OSError as exc:
                failures.append(f"{kind}: {exc}")
                continue
            latencies[kind].append(time.perf_counter() - started)
            if status >= 500:
                failures.append(f"{kind}: HTTP {status}")

    with ThreadPoolExecutor(len(kinds)) as pool:
        list(pool.map(client, kinds))
    latencies["failures"] = failures  # type: ignore[assignment]
    return latencies


def report_latency(title: str, result: dict) -> bool:
    ok = not result["failures"]
    print(f"\n{title}")
    print("| request | n | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for kind, values in result.items():
        if kind == "failures" or not values:
            continue
        p99 = _percentile(values, 0.99)
        ok = ok and p99 < 1.0
        print(
            f"| {kind} | {len(values)} | {statistics.median(values) * 1000:.1f} | {p99 * 1000:.1f} | "
            f"{max(values) * 1000:.1f} |"
        )
    if result["failures"]:
        print(f"failures: {len(result['failures'])}, e.g. {result['failures'][:3]}")
    return ok


def grpc_flood(gateway: Gateway, calls: int, key: str | None) -> dict:
    """`calls` concurrent 4 MiB calls over 8 channels; the gateway's RSS sampled meanwhile."""
    body = b"\x0a" + b"\xff" * (4 * 1024 * 1024 - 200)
    channels = [
        grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}", options=[("grpc.max_send_message_length", 8 << 20)])
        for _ in range(8)
    ]
    metadata = [("authorization", f"Bearer {key}")] if key else []
    peak, stop = [gateway.rss_mb("VmRSS")], threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak.append(gateway.rss_mb("VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    futures = [
        channels[i % 8]
        .unary_unary(GRPC_METHOD, request_serializer=None, response_deserializer=None)
        .future(body, metadata=metadata, timeout=120)
        for i in range(calls)
    ]
    codes: dict[str, int] = {}
    for future in futures:
        try:
            future.result()
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
        codes[code] = codes.get(code, 0) + 1
    seconds = time.monotonic() - started
    stop.set()
    sampler.join()
    for channel in channels:
        channel.close()
    return {"codes": codes, "seconds": seconds, "peak_mb": max(peak)}


def slow_phases(gateway: Gateway, args, body: bytes) -> bool:
    ok = report_latency(
        "Normal clients, nothing else open", normal_load(gateway.http_port, gateway.key, args.seconds, body)
    )
    with SlowSockets(gateway.http_port, args.slow) as slow:
        time.sleep(1.5)  # every slow socket connected and sending
        result = normal_load(gateway.http_port, gateway.key, args.seconds, body)
    return ok and report_latency(
        f"Normal clients with {args.slow} slow sockets open "
        f"({slow.reconnects} reconnected after the gateway closed them)",
        result,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=int, default=200, help="slow sockets held open")
    parser.add_argument("--seconds", type=float, default=10, help="seconds of normal load per phase")
    parser.add_argument("--grpc-calls", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="leave the data directory (see ingest.py --help)")
    parser.add_argument("--grpc-only", action="store_true", help="only the gRPC floods")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the gateway (its environment), e.g. GATEWAY_GRPC_THREADS=8",
    )
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="otlpgw-hostile-"))
    gateway = Gateway(data_dir, dict(item.split("=", 1) for item in args.set))
    gateway.start()
    ok = True
    try:
        body = build_request(random.Random(1), 100).SerializeToString()
        if not args.grpc_only:
            ok &= slow_phases(gateway, args, body)
        idle = gateway.rss_mb("VmRSS")
        print(f"\nGateway RSS (worker and its prepare processes): {idle:.0f} MB before the gRPC floods")
        for label, key in (("key-less", None), ("valid key, undecodable body", gateway.key)):
            flood = grpc_flood(gateway, args.grpc_calls, key)
            time.sleep(3)
            after = gateway.rss_mb("VmRSS")
            print(
                f"- {args.grpc_calls} concurrent 4 MiB calls, {label}: {flood['codes']} in {flood['seconds']:.1f}s; "
                f"RSS peak {flood['peak_mb']:.0f} MB, {after:.0f} MB 3 s after"
            )
    finally:
        code = gateway.stop()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"\ngateway exit code {code}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
