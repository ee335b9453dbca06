"""What embedded chDB costs per span, by how many spans each INSERT carries.

    .venv/bin/python bench/insert_cost.py [--sizes 1000,2000,3000,6000,12000] [--spans 900000]

For each size, a fresh chDB directory gets `--spans` spans of the ingest benchmark's requests in
INSERTs of that many spans, paced as the gateway's batcher sends them at ~60K spans/s (so
background merges run meanwhile, with the gateway's embedded settings and one merge thread), and
the script prints this process's CPU per span over the whole run: the INSERTs and the merges
that ran during them. Then a 1-row INSERT into otel_traces and into gateway_usage, the fixed
cost every INSERT pays. Rows are encoded before the clock starts: this is chDB's share only.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

from otlp_payloads import build_request  # noqa: E402  bench/, first on sys.path when this file runs

SPANS_PER_SECOND = 60_000


def _store(directory: str):
    from storage.clickhouse import Store
    from storage.schema import embedded_tuning_statements

    store = Store(f"chdb://{directory}/clickhouse", merge_threads=1)
    store.migrate()
    for statement in embedded_tuning_statements():
        store.command(statement)
    return store


def _cpu_per_span(store, table, column_names, block: bytes, block_spans: int, total_spans: int) -> tuple[float, float]:
    inserts = max(1, total_spans // block_spans)
    interval = block_spans / SPANS_PER_SECOND
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(inserts):
        store.insert_native(table, column_names, [block])
        time.sleep(max(0.0, wall0 + (i + 1) * interval - time.perf_counter()))
    spans = inserts * block_spans
    return (time.process_time() - cpu0) / spans * 1e6, time.perf_counter() - wall0


def _fixed_ms(store, batch, repeat: int = 50) -> float:
    block = store.encode(batch.table, batch.column_names, batch.columns)
    store.insert_native(batch.table, batch.column_names, [block])
    cpu0 = time.process_time()
    for _ in range(repeat):
        store.insert_native(batch.table, batch.column_names, [block])
    return (time.process_time() - cpu0) / repeat * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,2000,3000,6000,12000", help="spans per INSERT, comma-separated")
    parser.add_argument("--spans", type=int, default=900_000, help="spans inserted for each size")
    args = parser.parse_args()
    import django

    django.setup()
    from billing.metering import usage_batch
    from storage.flatten.traces import flatten_traces
    from vocabulary import Outcome, Signal

    sizes = [int(size) for size in args.sizes.split(",")]
    rng, tenant = random.Random(1), "bench-insert-cost"
    per_request = [
        flatten_traces(build_request(rng, 1000), tenant_id=tenant, retention_days=30).batches[0]
        for _ in range(-(-max(sizes) // 1000))
    ]
    first = per_request[0]
    print(f"{args.spans:,} spans per size, paced at {SPANS_PER_SECOND:,} spans/s, one merge thread")
    for size in sizes:
        requests = per_request[: max(1, size // 1000)]
        columns = [[value for batch in requests for value in batch.columns[i]] for i in range(len(first.column_names))]
        if size < 1000:
            columns = [column[:size] for column in columns]
        directory = tempfile.mkdtemp(prefix="otlpgw-insert-cost-")
        store = _store(directory)
        try:
            block = store.encode(first.table, first.column_names, columns)
            cpu, wall = _cpu_per_span(store, first.table, first.column_names, block, size, args.spans)
            parts = store.dangerously_query_unscoped(
                "SELECT count(), max(level) FROM system.parts "
                "WHERE database = currentDatabase() AND table = 'otel_traces' AND active",
                reason="insert cost benchmark: part counts",
            ).result_rows[0]
            print(
                f"  {size:>6,} spans per INSERT: {cpu:5.2f} us of CPU per span over {wall:.0f} s "
                f"(then {parts[0]} active parts, highest level {parts[1]})"
            )
        finally:
            store.close()
            shutil.rmtree(directory, ignore_errors=True)
    directory = tempfile.mkdtemp(prefix="otlpgw-insert-cost-")
    store = _store(directory)
    try:
        one_span = type(first)(first.table, first.column_names, [column[:1] for column in first.columns])
        usage = usage_batch(
            tenant_id=tenant, signal=Signal.TRACES, outcome=Outcome.ACCEPTED, items=1, items_accepted=1, body_bytes=1
        )
        print(
            f"fixed cost of one INSERT, CPU: otel_traces (1 row) {_fixed_ms(store, one_span):.1f} ms, "
            f"gateway_usage (1 row) {_fixed_ms(store, usage):.1f} ms"
        )
    finally:
        store.close()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
