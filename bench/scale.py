"""Partition layouts at SaaS scale: what many tenants and days cost chDB.

    .venv/bin/python bench/scale.py [--tenants 10000] [--active 1000] [--days 30] [--rows 200]
                                    [--layouts today,dedicated-month,shared]

For each layout, in a process of its own (one chDB path per process) and a fresh directory,
otel_traces (the gateway's own DDL, with the layout's PARTITION BY) is filled server-side:
`--active` tenants with `--rows` spans a day for `--days` days, and the other tenants with one
day of 10 spans (tenants that sent once). Retention is 7, 30 or 90 days, a third of the
tenants each. One INSERT a day makes one part per partition, the state merges reach. Then the
script measures:

- partitions, active parts and files on disk;
- reopen: a fresh process opening the directory and counting the rows (what a restart pays);
- INSERT ms: one INSERT as the gateway's writer sends it (20 tenants x 200 spans, now);
- one-tenant query ms: a tenant's last 7 days (count, p95 of Duration by service);
- delete: one tenant's rows, by DROP PARTITION where it has partitions of its own, by a
  lightweight DELETE where it shares them.

Layouts: `today` PARTITION BY (TenantId, toDate(Timestamp)), what every tenant had before
migration 5 and a dedicated tenant has now; `dedicated-month` (TenantId, toYYYYMM(Timestamp));
`shared` (RetentionDays, toDate(Timestamp)), as the shared tier's ("shared-<retention>d", day),
tenants kept apart by the sort key (TenantId first) and the tenant-scoped reader.

These three are otel_traces alone. `gateway-dedicated` and `gateway-shared` are the gateway's
whole schema as `Store.migrate` makes it (every table and view: the trace-id lookup, the
ledger, usage), every tenant in that tier, and are measured as the gateway does it: the INSERT
is the writer's (`Batcher.write_encoded` of 20 tenants' prepared requests at once, timed by
the writer), the query goes through the tenant-scoped reader, and the delete is the gateway's
(`drop_tenant_partitions`, or `delete_shared_rows` until `shared_deletion_progress` says done).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYOUTS = {
    "today": "(TenantId, toDate(Timestamp))",
    "dedicated-month": "(TenantId, toYYYYMM(Timestamp))",
    "shared": "(RetentionDays, toDate(Timestamp))",
}
# The gateway's own schema, by tier: the GatewayPartition of a tenant's rows (storage.requests).
GATEWAY_LAYOUTS = {
    "gateway-dedicated": "TenantId",
    "gateway-shared": "concat('shared-', toString(RetentionDays), 'd')",
}
# Tenant number -> a tenant id (the gateway's are UUIDs), in SQL.
_TENANT_SQL = "concat('00000000-0000-4000-8000-', leftPad(toString({n}), 12, '0'))"


def _tenant(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


def _child_gateway(layout: str, directory: str, args: dict) -> dict:
    """In a fresh process: the gateway's schema in one tier, filled, then measured as the
    gateway writes, reads and deletes."""
    import random
    import threading

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    os.environ["GATEWAY_DATA_DIR"] = directory
    import django

    django.setup()
    from otlp_payloads import build_request

    from gateway.otlp import decode
    from gateway.otlp.prepare import prepare
    from storage.batcher import Batcher, BatcherObserver
    from storage.clickhouse import Store
    from storage.reader import TenantReader
    from storage.tenant_data import delete_shared_rows, drop_tenant_partitions, shared_deletion_progress
    from tenants.keyring import KeyRing
    from vocabulary import Signal

    store = Store(f"chdb://{directory}/clickhouse")
    store.migrate()
    for table in ("otel_traces", "otel_traces_trace_id_ts"):
        store.command(
            f"ALTER TABLE {table} MODIFY SETTING max_parts_in_total = 1000000, parts_to_throw_insert = 100000"
        )
    partition = GATEWAY_LAYOUTS[layout]
    started = time.perf_counter()
    active, others = args["active"], args["tenants"] - args["active"]
    tenant = _TENANT_SQL.format(n="number % {a:UInt32}")
    for day in range(args["days"]):
        store.command(
            store_sql(
                "INSERT INTO otel_traces (TenantId, Timestamp, TraceId, SpanId, SpanName, SpanKind, ServiceName, "
                "ResourceAttributes, SpanAttributes, Duration, StatusCode, RetentionDays, GatewayPartition) "
                f"SELECT {tenant} AS TenantId, now64(9) - toIntervalDay({{d:UInt32}}) - toIntervalSecond(number % 86000), "
                "hex(cityHash64(number, {d:UInt32})), hex(cityHash64({d:UInt32}, number)), "
                "concat('GET /api/', toString(number % 20)), 'Server', concat('svc-', toString(number % 5)), "
                "map('service.name', concat('svc-', toString(number % 5)), 'host.name', concat('h', toString(number % 50))), "
                "map('http.status_code', toString(200 + number % 3), 'i', toString(number)), "
                "(number * 7919) % 1000000, 'Ok', [7, 30, 90][(number % {a:UInt32}) % 3 + 1] AS RetentionDays, "
                f"{partition} FROM numbers({{n:UInt64}}) SETTINGS max_partitions_per_insert_block = 0",
                {"a": active, "d": day, "n": active * args["rows"]},
            )
        )
    if others:
        other = _TENANT_SQL.format(n="{a:UInt32} + number % {o:UInt32}")
        store.command(
            store_sql(
                "INSERT INTO otel_traces (TenantId, Timestamp, TraceId, SpanId, SpanName, ServiceName, Duration, "
                f"RetentionDays, GatewayPartition) SELECT {other} AS TenantId, "
                "now64(9) - toIntervalDay((number % {o:UInt32}) % {days:UInt32}), hex(cityHash64(number)), "
                "toString(number), 'op', 'svc', 5, [7, 30, 90][number % 3 + 1] AS RetentionDays, "
                f"{partition} FROM numbers({{o:UInt32}} * 10) SETTINGS max_partitions_per_insert_block = 0",
                {"a": active, "o": others, "days": args["days"]},
            )
        )
    fill = time.perf_counter() - started

    def one(sql: str):
        return store.dangerously_query_unscoped(sql, reason="bench").result_rows[0]

    (rows,) = one("SELECT count() FROM otel_traces")
    partitions, parts = one(
        "SELECT uniqExact(partition), count() FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'otel_traces' AND active"
    )
    (all_parts,) = one("SELECT count() FROM system.parts WHERE database = currentDatabase() AND active")

    reader = TenantReader(store, _tenant(17))
    sql = (
        "SELECT ServiceName, count(), quantile(0.95)(Duration) FROM otel_traces WHERE TenantId = {tenant_id:String} "
        "AND Timestamp >= now() - toIntervalDay(7) GROUP BY ServiceName"
    )
    reader.query(sql)
    t = time.perf_counter()
    for _ in range(10):
        reader.query(sql)
    query_ms = (time.perf_counter() - t) / 10 * 1000

    class Timed(BatcherObserver):
        def __init__(self):
            self.seconds = []

        def inserted(self, *, table, rows, seconds, ok):
            if table == "otel_traces" and ok:
                self.seconds.append(seconds)

    observer = Timed()
    batcher = Batcher(store, observer=observer, linger_seconds=0.05)
    batcher.start()
    rng = random.Random(7)
    for round_ in range(10):
        tenants = [(index * 37 + round_) % active for index in range(20)]
        prepared = []
        for number in tenants:
            body = build_request(rng, 200).SerializeToString()
            retention = [7, 30, 90][number % 3]
            prepared.append(
                prepare(
                    Signal.TRACES,
                    body,
                    decode.Encoding.PROTOBUF,
                    tenant_id=_tenant(number),
                    retention_days=retention,
                    ring=KeyRing(_tenant(number), {}),
                    sensitive=frozenset(),
                    encode=batcher.encode,
                    body_bytes=len(body),
                    isolation="shared" if layout == "gateway-shared" else "dedicated",
                )
            )
        threads = [
            threading.Thread(target=batcher.write_encoded, args=(p.blocks,), kwargs={"timeout": 60}) for p in prepared
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    batcher.stop()
    insert_ms = sorted(observer.seconds)[len(observer.seconds) // 2] * 1000
    inserts_per_round = len(observer.seconds) / 10

    victim = _tenant(42)
    started = time.perf_counter()
    if layout == "gateway-dedicated":
        dropped = drop_tenant_partitions(store, victim)
        how = f"drop_tenant_partitions: {dropped} partitions"
    else:
        tables = delete_shared_rows(store, victim)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            progress = shared_deletion_progress(store, victim)
            if all(table["done"] for table in progress.values()):
                break
            time.sleep(0.5)
        how = f"delete_shared_rows: {len(tables)} tables, until shared_deletion_progress says done"
    delete_s = time.perf_counter() - started
    (left,) = one(f"SELECT count() FROM otel_traces WHERE TenantId = '{victim}'")
    store.close()
    files = sum(len(names) for _, _, names in os.walk(f"{directory}/clickhouse"))
    return dict(
        layout=layout,
        rows=rows,
        partitions=partitions,
        parts=parts,
        all_parts=all_parts,
        files=files,
        fill_s=fill,
        query_ms=query_ms,
        insert_ms=insert_ms,
        insert_note=f"{inserts_per_round:.1f} INSERTs of otel_traces per 20 requests",
        delete_s=delete_s,
        delete_how=how,
        left_after_delete=left,
    )


def store_sql(sql: str, parameters: dict) -> str:
    """`sql` with its {name:Type} parameters put in as numbers (Store.command takes none)."""
    for name, value in parameters.items():
        sql = re.sub(r"\{" + name + r":[A-Za-z0-9]+\}", str(int(value)), sql)
    return sql


def _child(layout: str, directory: str, args: dict) -> dict:
    """In a fresh process: build, fill, merge and measure one layout."""
    sys.path.insert(0, str(ROOT))
    import clickhouse_connect

    from storage.schema import _TRACES, PLAIN

    ddl = _TRACES.create_statements(PLAIN)[0]
    ddl = re.sub(r"PARTITION BY .*\n", f"PARTITION BY {LAYOUTS[layout]}\n", ddl)
    client = clickhouse_connect.get_client(dsn=f"chdb://{directory}/clickhouse")
    client.command(ddl)
    # The gateway's embedded settings allow this many parts; the load makes one part per
    # partition and day before the merges.
    client.command(
        "ALTER TABLE otel_traces MODIFY SETTING max_parts_in_total = 1000000, parts_to_throw_insert = 100000"
    )
    started = time.perf_counter()
    active, others = args["active"], args["tenants"] - args["active"]
    # One INSERT per day for the active tenants (their spans of that day); the others, one day.
    for day in range(args["days"]):
        client.command(
            "INSERT INTO otel_traces (TenantId, Timestamp, TraceId, SpanId, SpanName, SpanKind, ServiceName, "
            "ResourceAttributes, SpanAttributes, Duration, StatusCode, RetentionDays) "
            "SELECT concat('tenant-', toString(number % {a:UInt32})), "
            "now64(9) - toIntervalDay({d:UInt32}) - toIntervalSecond(number % 86000), "
            "hex(cityHash64(number, {d:UInt32})), hex(cityHash64({d:UInt32}, number)), "
            "concat('GET /api/', toString(number % 20)), 'Server', concat('svc-', toString(number % 5)), "
            "map('service.name', concat('svc-', toString(number % 5)), 'host.name', concat('h', toString(number % 50))), "
            "map('http.status_code', toString(200 + number % 3), 'i', toString(number)), "
            "(number * 7919) % 1000000, 'Ok', [7, 30, 90][(number % {a:UInt32}) % 3 + 1] "
            "FROM numbers({n:UInt64}) SETTINGS max_partitions_per_insert_block = 0",
            parameters={"a": active, "d": day, "n": active * args["rows"]},
        )
    if others:
        client.command(
            "INSERT INTO otel_traces (TenantId, Timestamp, TraceId, SpanId, SpanName, ServiceName, Duration, "
            "RetentionDays) SELECT concat('tenant-', toString({a:UInt32} + number % {o:UInt32})), "
            "now64(9) - toIntervalDay((number % {o:UInt32}) % {days:UInt32}), hex(cityHash64(number)), toString(number), 'op', "
            "'svc', 5, [7, 30, 90][number % 3 + 1] FROM numbers({o:UInt32} * 10) "
            "SETTINGS max_partitions_per_insert_block = 0",
            parameters={"a": active, "o": others, "days": args["days"]},
        )
    fill = time.perf_counter() - started
    rows = client.query("SELECT count() FROM otel_traces").result_rows[0][0]
    partitions, parts = client.query(
        "SELECT uniqExact(partition), count() FROM system.parts WHERE table = 'otel_traces' AND active"
    ).result_rows[0]

    def timed(sql: str, parameters: dict | None = None, repeat: int = 10) -> float:
        client.query(sql, parameters=parameters)
        started = time.perf_counter()
        for _ in range(repeat):
            client.query(sql, parameters=parameters)
        return (time.perf_counter() - started) / repeat * 1000

    query_ms = timed(
        "SELECT ServiceName, count(), quantile(0.95)(Duration) FROM otel_traces WHERE TenantId = {t:String} "
        "AND Timestamp >= now() - toIntervalDay(7) GROUP BY ServiceName",
        {"t": "tenant-17"},
    )
    insert_ms = []
    for i in range(10):
        started = time.perf_counter()
        client.command(
            "INSERT INTO otel_traces (TenantId, Timestamp, TraceId, SpanId, SpanName, ServiceName, Duration, "
            "RetentionDays) SELECT concat('tenant-', toString((number % 20) * 37 + {i:UInt32})), now64(9), "
            "hex(cityHash64(number, {i:UInt32})), toString(number), 'op', 'svc', 5, "
            "[7, 30, 90][((number % 20) * 37 + {i:UInt32}) % 3 + 1] FROM numbers(4000)",
            parameters={"i": i},
        )
        insert_ms.append((time.perf_counter() - started) * 1000)
    victim = "tenant-42"
    started = time.perf_counter()
    own = client.query(
        "SELECT DISTINCT partition_id FROM system.parts WHERE table = 'otel_traces' AND active "
        "AND partition LIKE {prefix:String}",
        parameters={"prefix": f"('{victim}',%"},
    ).result_rows
    if own:
        for (partition_id,) in own:
            client.command(f"ALTER TABLE otel_traces DROP PARTITION ID '{partition_id}'")
        how = f"DROP PARTITION x{len(own)}"
    else:
        client.command("DELETE FROM otel_traces WHERE TenantId = {t:String}", parameters={"t": victim})
        how = "lightweight DELETE"
    delete_s = time.perf_counter() - started
    left = client.query("SELECT count() FROM otel_traces WHERE TenantId = {t:String}", parameters={"t": victim})
    client.close()
    files = sum(len(names) for _, _, names in os.walk(directory))
    return dict(
        layout=layout,
        rows=rows,
        partitions=partitions,
        parts=parts,
        files=files,
        fill_s=fill,
        query_ms=query_ms,
        insert_ms=sorted(insert_ms)[len(insert_ms) // 2],
        delete_s=delete_s,
        delete_how=how,
        left_after_delete=left.result_rows[0][0],
    )


def _reopen(directory: str) -> float:
    script = (
        "import sys, time, clickhouse_connect\n"
        "t = time.perf_counter()\n"
        "c = clickhouse_connect.get_client(dsn='chdb://' + sys.argv[1] + '/clickhouse')\n"
        "c.query('SELECT count() FROM otel_traces')\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, directory], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--active", type=int, default=1_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=200, help="spans per active tenant and day")
    parser.add_argument("--layouts", default=",".join([*LAYOUTS, *GATEWAY_LAYOUTS]))
    parser.add_argument("--child", nargs=2, metavar=("LAYOUT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = {"tenants": args.tenants, "active": args.active, "days": args.days, "rows": args.rows}
    if args.child:
        child = _child_gateway if args.child[0] in GATEWAY_LAYOUTS else _child
        print(json.dumps(child(args.child[0], args.child[1], settings)))
        return 0
    results = []
    for layout in args.layouts.split(","):
        directory = tempfile.mkdtemp(prefix=f"otlpgw-scale-{layout}-")
        try:
            out = subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--child", layout, directory],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                print(f"{layout} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                return 1
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["reopen_s"] = _reopen(directory)
            results.append(result)
            print(f"  {layout}: {result}", file=sys.stderr, flush=True)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    print(
        f"{args.tenants:,} tenants ({args.active:,} active: {args.rows} spans a day for {args.days} days; the "
        "others one day of 10 spans), retention 7/30/90 days\n"
    )
    print(
        "| layout | rows | otel_traces partitions | otel_traces parts | parts, every table | files | reopen + count s "
        "| INSERT ms (4,000 spans, 20 tenants) | one tenant, 7 days, ms | delete one tenant |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        every = f"{r['all_parts']:,}" if "all_parts" in r else "(one table)"
        insert = f"{r['insert_ms']:.0f}" + (f" ({r['insert_note']})" if "insert_note" in r else "")
        print(
            f"| {r['layout']} | {r['rows']:,} | {r['partitions']:,} | {r['parts']:,} | {every} | {r['files']:,} | "
            f"{r['reopen_s']:.1f} | {insert} | {r['query_ms']:.0f} | {r['delete_s']:.2f} s "
            f"({r['delete_how']}; {r['left_after_delete']} rows left) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
