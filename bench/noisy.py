"""A noisy neighbour: does one tenant sending far beyond its share slow another tenant down?

    .venv/bin/python bench/noisy.py [--duration 20] [--noisy-concurrency 12] [--quiet-rate 10]

Starts `manage.py serve` on a fresh data directory with two tenants. The quiet tenant sends
`--quiet-rate` requests/s of `--quiet-spans` spans over gRPC, paced, its latency measured from
each request's scheduled time. It does so alone, then while the noisy tenant sends requests of
`--noisy-spans` spans over gRPC, in a closed loop with `--noisy-concurrency` requests in flight
(as much as the gateway takes: 20-30 times the quiet tenant's volume on a 2-core machine), or
with `--noisy-rate`, paced at that many requests/s (10 is ten times the quiet tenant's volume
with the defaults). Prints the quiet
tenant's p50/p99 in both phases and their ratio, and the noisy tenant's throughput. The
noisy concurrency stays under the gRPC server's threads (16), so what is measured is the queue
in front of the prepare workers and the writer, not the server's thread pool.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import Gateway, _sender, add_set_argument, unique  # noqa: E402  bench/, first on sys.path
from otlp_payloads import build_request  # noqa: E402


def _second_key(gateway: Gateway) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "DJANGO_"))}
    env.update(GATEWAY_DATA_DIR=str(gateway.data_dir), DJANGO_SETTINGS_MODULE="gateway.settings")
    out = subprocess.run(
        [sys.executable, "manage.py", "create_tenant", "Quiet"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    out.check_returncode()
    return next(word for word in out.stdout.split() if word.startswith("otlpgw_"))


def _quiet(port: int, key: str, bodies: list[bytes], rate: float, duration: float, base: int) -> list[float]:
    send = _sender("grpc", port, key)
    latencies, lock = [], threading.Lock()
    start = time.monotonic()

    def one(k: int) -> None:
        planned = start + k / rate
        time.sleep(max(0.0, planned - time.monotonic()))
        send(unique(bodies[k % len(bodies)], base + k))
        with lock:
            latencies.append(time.monotonic() - planned)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(int(rate * duration))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(latencies)


def _noisy(
    port: int, key: str, bodies: list[bytes], concurrency: int, rate: float | None, stop: threading.Event, sent: list
) -> None:
    """`concurrency` senders in a closed loop, or with `rate`, paced at `rate` requests/s in all."""
    send = _sender("grpc", port, key)
    start = time.monotonic()

    def loop(t: int) -> None:
        k = 0
        while not stop.is_set():
            if rate:
                planned = start + (k * concurrency + t) / rate
                time.sleep(max(0.0, planned - time.monotonic()))
                if stop.is_set():
                    break
            send(unique(bodies[(t + k) % len(bodies)], (1 << 50) | (t << 32) | k))
            k += 1
        sent.append(k)

    threads = [threading.Thread(target=loop, args=(t,)) for t in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--quiet-rate", type=float, default=10, help="requests/s of the quiet tenant")
    parser.add_argument("--quiet-spans", type=int, default=100)
    parser.add_argument("--noisy-spans", type=int, default=1000)
    parser.add_argument("--noisy-concurrency", type=int, default=12)
    parser.add_argument(
        "--noisy-rate", type=float, default=None, help="requests/s of the noisy tenant, paced (default: a closed loop)"
    )
    add_set_argument(parser, example="GATEWAY_BATCH_FAIR_ROWS=5000")
    args = parser.parse_args()
    rng = random.Random(7)
    quiet_bodies = [build_request(rng, args.quiet_spans).SerializeToString() for _ in range(10)]
    noisy_bodies = [build_request(rng, args.noisy_spans).SerializeToString() for _ in range(10)]
    directory = Path(tempfile.mkdtemp(prefix="otlpgw-noisy-"))
    gateway = Gateway(directory / "data", dict(args.set))
    gateway.start()
    try:
        quiet_key = _second_key(gateway)
        _quiet(gateway.grpc_port, quiet_key, quiet_bodies, args.quiet_rate, 3, 1 << 40)  # warm up
        alone = _quiet(gateway.grpc_port, quiet_key, quiet_bodies, args.quiet_rate, args.duration, 2 << 40)
        stop, sent = threading.Event(), []
        noisy = threading.Thread(
            target=_noisy,
            args=(gateway.grpc_port, gateway.key, noisy_bodies, args.noisy_concurrency, args.noisy_rate, stop, sent),
        )
        noisy.start()
        time.sleep(2)  # the noisy tenant's backlog builds up
        started = time.monotonic()
        together = _quiet(gateway.grpc_port, quiet_key, quiet_bodies, args.quiet_rate, args.duration, 3 << 40)
        elapsed = time.monotonic() - started
        stop.set()
        noisy.join()
    finally:
        gateway.stop()
        shutil.rmtree(directory, ignore_errors=True)
    quiet_volume = args.quiet_rate * args.quiet_spans
    noisy_volume = sum(sent) * args.noisy_spans / (elapsed + 2)
    print(f"quiet tenant: {args.quiet_rate:g} requests/s of {args.quiet_spans} spans ({quiet_volume:,.0f} spans/s)")
    print(f"noisy tenant: ~{noisy_volume:,.0f} spans/s ({noisy_volume / quiet_volume:.0f}x the quiet tenant's)")
    print(
        f"| quiet tenant | p50 ms | p99 ms |\n|---|---|---|\n| alone | {_pct(alone, 0.5):.0f} | {_pct(alone, 0.99):.0f} |\n"
        f"| with the noisy tenant | {_pct(together, 0.5):.0f} | {_pct(together, 0.99):.0f} |"
    )
    print(f"p99 with / alone: {_pct(together, 0.99) / _pct(alone, 0.99):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
