"""The protect step's cost: in-process, one thread, on the ingest benchmark's requests, spans/s
for parse + flatten, then + protect with 0 and with 3 sensitive attributes per span.

    .venv/bin/python bench/protect.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

import django  # noqa: E402

django.setup()

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from otlp_payloads import _kv, build_request  # noqa: E402

from storage.flatten.traces import flatten_traces  # noqa: E402
from tenants.encryption import sensitive_keys  # noqa: E402
from tenants.keyring import KeyRing  # noqa: E402
from tenants.protect import protect  # noqa: E402

TENANT = "00000000-0000-4000-8000-000000000001"
SENSITIVE = [
    ("user.email", "ada.lovelace@example.com"),
    ("enduser.id", "u-4242"),
    ("db.statement", "SELECT * FROM orders WHERE customer_id = $1"),
]


def payloads(sensitive: bool, count: int = 10) -> list[bytes]:
    rng = random.Random(7)
    out = []
    for _ in range(count):
        request = build_request(rng, 1000)
        if sensitive:
            for span in request.resource_spans[0].scope_spans[0].spans:
                span.attributes.extend(_kv(k, v) for k, v in SENSITIVE)
        out.append(request.SerializeToString())
    return out


def rate(bodies: list[bytes], seconds: float, *, ring: KeyRing | None) -> float:
    keys = sensitive_keys(())
    spans, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        request = ExportTraceServiceRequest.FromString(bodies[i % len(bodies)])
        flat = flatten_traces(request, tenant_id=TENANT, retention_days=30)
        if ring is not None:
            protect(flat.batches, ring=ring, sensitive=keys)
        spans += flat.accepted
        i += 1
    return spans / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    ring = KeyRing(TENANT, {1: secrets.token_bytes(32)})
    plain, marked = payloads(False), payloads(True)
    rows = [
        ("parse + flatten, 0 sensitive attributes", rate(plain, args.seconds, ring=None)),
        ("parse + flatten + protect, 0 sensitive attributes", rate(plain, args.seconds, ring=ring)),
        ("parse + flatten, 3 sensitive attributes", rate(marked, args.seconds, ring=None)),
        ("parse + flatten + protect, 3 sensitive attributes", rate(marked, args.seconds, ring=ring)),
    ]
    print("| in-process, 1 thread, 1000-span requests | spans/s |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value:,.0f} |")


if __name__ == "__main__":
    main()
