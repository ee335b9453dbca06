"""Ingest benchmark: starts `manage.py serve` on a fresh data directory, drives it with OTLP
trace exports (1000 spans each) from separate client processes over OTLP/gRPC and OTLP/HTTP,
and compares the end-to-end rate with in-process floors (protobuf parse; + flatten; + chDB insert).

    ./dev bench [--duration 15] [--clients 1] [--concurrency 8] [--out results.md|.json]

Figures: spans/s, request latency p50/p99, the gateway's CPU and peak RSS (VmHWM, cumulative
over the run; the gunicorn worker and its prepare worker processes, summed), how many spans
each otel_traces INSERT carried and the share of the run the writer spent in INSERTs (from
the gateway's /metrics), and a gRPC run paced at half the measured maximum. `--py-spy FILE`
records the worker during the gRPC maximum-throughput run (raw collapsed stacks; summarise
them with bench/pyspy_top.py). Exits 1 on any failed request or if the spans acknowledged are
not exactly the rows found in otel_traces after the gateway stopped. See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_payloads import build_request  # bench/, first on sys.path when this file runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the floors measure this tree's storage.flatten, like the gateway it starts
GRPC_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the gateway ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gateway:
    def __init__(self, data_dir: Path, settings: dict[str, str] | None = None):
        self.data_dir, self.log = data_dir, data_dir / "serve.log"
        self.grpc_port, self.http_port = free_port(), free_port()
        self.settings = settings or {}

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "DJANGO_"))}
        env.update(
            GATEWAY_DATA_DIR=str(self.data_dir),
            GATEWAY_HOST="127.0.0.1",
            PYTHONUNBUFFERED="1",
            GATEWAY_GRPC_PORT=str(self.grpc_port),
            GATEWAY_HTTP_PORT=str(self.http_port),
            DJANGO_SETTINGS_MODULE="gateway.settings",
        )
        env.update(self.settings)  # --set: the gateway's own environment, nothing else of ours
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.output = open(self.log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve"], cwd=ROOT, env=env, stdout=self.output, stderr=subprocess.STDOUT
        )
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + 90
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gateway did not start:\n" + self.log.read_text())
                try:
                    if (
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        self.key = next(w for w in self.log.read_text().split() if w.startswith("otlpgw_"))
        workers = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == self.process.pid]
        if len(workers) != 1:
            raise RuntimeError(f"expected one gunicorn worker under pid {self.process.pid}, found {workers}")
        self.worker = workers[0]

    def processes(self) -> list[int]:
        """The worker and the processes it started (prepare workers): what serves requests."""
        found, frontier = [self.worker], [self.worker]
        while frontier:
            parents = set(frontier)
            frontier = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) in parents]
            found += frontier
        return found

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.processes():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads
        return total

    def thread_cpu_seconds(self) -> Counter:
        """CPU seconds so far by thread role: the worker's threads by their kernel names
        (`_thread_role`), and the prepare worker processes summed as one."""
        seconds: Counter = Counter()
        for pid in self.processes():
            role = None if pid == self.worker else "prepare workers (processes)"
            try:
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            except FileNotFoundError:
                continue
            for task in tasks:
                try:
                    stat = (task / "stat").read_text()
                except FileNotFoundError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                name = role or _thread_role(stat[stat.index("(") + 1 : stat.rindex(")")])
                seconds[name] += (int(fields[11]) + int(fields[12])) / CLK_TCK
        return seconds

    def rss_mb(self, field: str = "VmHWM") -> float:
        """The peak (VmHWM) or current (VmRSS) resident sets of the worker and its processes, summed."""
        total = 0.0
        for pid in self.processes():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except FileNotFoundError:
                continue
            total += next((int(line.split()[1]) / 1024 for line in lines if line.startswith(field + ":")), 0.0)
        return total

    def rss_by_process(self, field: str = "VmHWM") -> dict[str, float]:
        """`field` of each process, MB: the gunicorn arbiter, the worker, each of its children."""
        found = {}
        for role, pid in [("arbiter", self.process.pid), *((f"pid {pid}", pid) for pid in self.processes())]:
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except FileNotFoundError:
                continue
            if pid == self.worker:
                role = "worker"
            elif "resource_tracker" in command:
                role = "resource tracker"
            elif "multiprocessing" in command:
                role = f"prepare {pid}"
            found[role] = next((int(line.split()[1]) / 1024 for line in lines if line.startswith(field + ":")), 0.0)
        return found

    def writer_counters(self, table: str = "otel_traces") -> dict[str, float]:
        """The batcher's INSERT count, seconds and rows for `table` so far, from /metrics."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        wanted = {
            "otlp_gateway_clickhouse_insert_duration_seconds_count": "inserts",
            "otlp_gateway_clickhouse_insert_duration_seconds_sum": "seconds",
            "otlp_gateway_clickhouse_rows_total": "rows",
        }
        counters = dict.fromkeys(wanted.values(), 0.0)
        for line in text.splitlines():
            name, _, rest = line.partition("{")
            if name in wanted and f'table="{table}"' in rest and 'result="stored"' in rest:
                counters[wanted[name]] += float(rest.rsplit(" ", 1)[1])
        return counters

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.output.close()
        return code

    def stored_spans(self) -> int:
        """Rows in otel_traces, read from a fresh process once the gateway has let go of chDB."""
        script = (
            "import clickhouse_connect, sys\n"
            "c = clickhouse_connect.get_client(dsn=sys.argv[1])\n"
            "print(c.query('SELECT count() FROM otel_traces').result_rows[0][0])\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, f"chdb://{self.data_dir / 'clickhouse'}"],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.split()[-1])


def _thread_role(name: str) -> str:
    """chDB names its threads: MergeMutate runs merges; an INSERT's pipeline runs in pool threads
    named QueryPipelineEx or QueryPushPipeEx while they work on it and ThreadPool after (a
    thread's CPU counts under its name when read). Python's threads, gRPC's pollers and the part
    of an INSERT chDB runs in the calling (batcher) thread carry the process's own name."""
    if name == "MergeMutate":
        return "chDB merges"
    if name.startswith("Query") or name == "ThreadPool":
        return "chDB query threads"
    if name in ("python", "python3", "gunicorn"):
        return "serving threads"
    return name


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle or iowait) since boot: contention check."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, open("/proc/stat").readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _ppid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


# --- client processes -------------------------------------------------------------------------
def _sender(transport: str, port: int, key: str):
    """A function body -> None that sends one export, raising on anything but success."""
    if transport == "grpc":
        import grpc

        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
        call = channel.unary_unary(GRPC_METHOD, request_serializer=None, response_deserializer=None)
        metadata = (("authorization", f"Bearer {key}"),)
        return lambda body: call(body, metadata=metadata, timeout=60)
    local = threading.local()
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"}

    def send(body: bytes) -> None:
        for attempt in (1, 2):  # a kept-alive connection the server closed gets one reconnect
            if getattr(local, "conn", None) is None:
                local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                local.conn.request("POST", "/v1/traces", body, headers)
                reply = local.conn.getresponse()
                data = reply.read()
            except (http.client.HTTPException, OSError):
                local.conn.close()
                local.conn = None
                if attempt == 2:
                    raise
                continue
            if reply.status != 200:
                raise RuntimeError(f"HTTP {reply.status}: {data[:200]!r}")
            return

    return send


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def add_set_argument(parser, *, example: str) -> None:
    """--set NAME=VALUE, repeatable: the gateway's own environment (`Gateway(..., dict(args.set))`)."""
    parser.add_argument(
        "--set",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        type=lambda s: tuple(s.split("=", 1)),
        help=f"a setting for the gateway (environment variable), e.g. {example}",
    )


def unique(body: bytes, number: int) -> bytes:
    """`body` made a request of its own: the same spans, with an unknown field (15, a varint)
    that holds `number` appended, which a parser keeps aside. The gateway stores a request it
    has already stored only once (storage.requests), as an exporter sending one again expects;
    the benchmark's few pre-built requests, sent over and over, must each count."""
    return body + b"\x78" + _varint(number)


def client_main(clients, index, transport, port, key, payloads, spans, threads, duration, rate, ready, go, results):
    """One client process: `threads` senders, closed loop (rate None) or paced at `rate` requests/s
    for the whole client fleet, latency then measured from each request's scheduled time."""
    send = _sender(transport, port, key)
    send(unique(payloads[index % len(payloads)], index << 40))  # warm the connection
    acked = [spans]
    ready.put(index & 0xFF)
    go.wait()
    start = time.monotonic()
    deadline = start + duration
    latencies, errors, ends, lock = [], [], [], threading.Lock()
    cpu0 = time.process_time()

    def worker(t: int, slot: int, slots: int) -> None:
        k, mine, last = 0, [], start
        while True:
            if rate:
                planned = start + (slot + k * slots) / rate
                if planned >= deadline:
                    break
                time.sleep(max(0.0, planned - time.monotonic()))
            else:
                planned = time.monotonic()
                if planned >= deadline:
                    break
            try:
                send(unique(payloads[(t * 7919 + k) % len(payloads)], (index << 40) | (t << 32) | (k + 1)))
                last = time.monotonic()
                mine.append(last - planned)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(repr(exc)[:300])
            k += 1
        with lock:
            latencies.extend(mine)
            acked[0] += len(mine) * spans
            ends.append(last)

    client = index & 0xFF
    pool = [threading.Thread(target=worker, args=(t, client * threads + t, clients * threads)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    results.put(
        dict(
            latencies=latencies,
            errors=errors,
            elapsed=max(ends) - start,
            acked=acked[0],
            client_cpu=time.process_time() - cpu0,
        )
    )


_RUNS = itertools.count(1)


def drive(gateway, transport, args, payloads, rate=None, duration=None) -> dict:
    duration = duration or args.duration
    ctx = mp.get_context("spawn")  # no grpc state crosses a fork
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(
            target=client_main,
            daemon=True,
            args=(
                args.clients,
                (next(_RUNS) << 8) | i,  # every client of every run sends requests of its own
                transport,
                gateway.grpc_port if transport == "grpc" else gateway.http_port,
                gateway.key,
                payloads,
                args.spans,
                args.concurrency,
                duration,
                rate / args.spans if rate else None,
                ready,
                go,
                results,
            ),
        )
        for i in range(args.clients)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    writer0 = gateway.writer_counters()
    cpu0, busy0, threads0 = gateway.cpu_seconds(), machine_busy_seconds(), gateway.thread_cpu_seconds()
    go.set()
    parts = [results.get(timeout=duration + 180) for _ in procs]
    worker_cpu, busy = gateway.cpu_seconds() - cpu0, machine_busy_seconds() - busy0
    threads = gateway.thread_cpu_seconds()
    threads.subtract(threads0)
    writer = {k: v - writer0[k] for k, v in gateway.writer_counters().items()}
    for p in procs:
        p.join()
    latencies = sorted(x for part in parts for x in part["latencies"])
    elapsed = max(part["elapsed"] for part in parts)
    errors = [e for part in parts for e in part["errors"]]

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    result = dict(
        run=f"{transport} " + (f"paced {rate:,.0f} spans/s" if rate else "max"),
        requests=len(latencies),
        errors=len(errors),
        first_error=errors[0] if errors else "",
        spans_per_s=len(latencies) * args.spans / elapsed,
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        max_ms=latencies[-1] * 1000 if latencies else float("nan"),
        worker_cpu_cores=worker_cpu / elapsed,
        client_cpu_cores=sum(p["client_cpu"] for p in parts) / elapsed,
        machine_busy_cores=busy / elapsed,
        worker_peak_rss_mb=gateway.rss_mb(),
        acked_spans=sum(p["acked"] for p in parts),
        rows_per_insert=writer["rows"] / writer["inserts"] if writer["inserts"] else float("nan"),
        writer_busy=writer["seconds"] / elapsed,
        cpu_by_thread={name: round(sec / elapsed, 3) for name, sec in threads.most_common() if sec / elapsed >= 0.005},
    )
    print(
        f"  {result['run']}: {result['spans_per_s']:,.0f} spans/s, p50 {result['p50_ms']:.0f} ms, "
        f"p99 {result['p99_ms']:.0f} ms, {result['rows_per_insert']:,.0f} spans per otel_traces INSERT, "
        f"writer busy {result['writer_busy']:.0%}, errors {result['errors']} {result['first_error']}"
    )
    print(
        "    gateway CPU by thread, cores: "
        + ", ".join(f"{name} {cores:.2f}" for name, cores in result["cpu_by_thread"].items())
    )
    return result


def start_py_spy(pid: int, args) -> subprocess.Popen:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--rate",
        "50",
        "--nonblocking",
        "--duration",
        str(int(args.duration)),
        "--output",
        args.py_spy,
    ] + ["--gil"] * args.py_spy_gil
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


# --- in-process floors ------------------------------------------------------------------------
STAGES = {
    "parse only": ("parse",),
    "parse + flatten": ("parse", "flatten"),
    "parse + flatten + insert": ("parse", "flatten", "encode", "insert"),
}


def floors(payloads: list[bytes], spans: int, seconds: float, runs: tuple[str, ...] = tuple(STAGES)) -> list[dict]:
    """One thread, no transport. "encode" turns each request's rows into a Native block and
    "insert" writes it (one INSERT of `spans` rows; Store.encode and Store.insert_native, as the
    batcher uses them) into a fresh chDB directory."""
    from storage.clickhouse import Store
    from storage.flatten.traces import flatten_traces

    directory = tempfile.mkdtemp(prefix="otlpgw-floor-")
    store = Store(f"chdb://{directory}/clickhouse")
    store.migrate()
    tenant, results = str(uuid.uuid4()), []
    for name, stages in STAGES.items():
        if name not in runs:
            continue
        spent, count, start = dict.fromkeys(stages, 0.0), 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for body in payloads:
                t0 = time.perf_counter()
                request = ExportTraceServiceRequest.FromString(body)
                t1 = time.perf_counter()
                spent["parse"] += t1 - t0
                if "flatten" in stages:
                    # A retention of its own makes each INSERT differ from the last: the same
                    # rows again would be dropped as a duplicate (storage.requests).
                    retention = 30 + count % 1000
                    batch = flatten_traces(request, tenant_id=tenant, retention_days=retention).batches[0]
                    t2 = time.perf_counter()
                    spent["flatten"] += t2 - t1
                    if "insert" in stages:
                        block = store.encode(batch.table, batch.column_names, batch.columns)
                        t3 = time.perf_counter()
                        spent["encode"] += t3 - t2
                        store.insert_native(batch.table, batch.column_names, [block])
                        spent["insert"] += time.perf_counter() - t3
                count += 1
        elapsed = time.perf_counter() - start
        results.append(
            dict(
                run=name,
                requests=count,
                spans_per_s=count * spans / elapsed,
                per_request_ms=elapsed / count * 1000,
                **{f"{k}_ms": v / count * 1000 for k, v in spent.items()},
            )
        )
    store.close()
    shutil.rmtree(directory)
    return results


# --- report -----------------------------------------------------------------------------------
def table(floors: list[dict], runs: list[dict], parse_rate: float) -> str:
    lines = [
        "| run | spans/s | vs parse-only | p50 ms | p99 ms | max ms | errors | gateway CPU | client CPU | machine busy "
        f"(of {os.cpu_count()}) | gateway peak RSS MB | spans per INSERT | writer busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in floors:
        lines.append(
            f"| {f['run']} (in-process, 1 thread) | {f['spans_per_s']:,.0f} | {f['spans_per_s'] / parse_rate:.1%} "
            f"| {f['per_request_ms']:.1f}/req | | | | | | | | | |"
        )
    for r in runs:
        lines.append(
            f"| {r['run']} | {r['spans_per_s']:,.0f} | {r['spans_per_s'] / parse_rate:.1%} | {r['p50_ms']:.0f} "
            f"| {r['p99_ms']:.0f} | {r['max_ms']:.0f} | {r['errors']} | {r['worker_cpu_cores']:.2f} "
            f"| {r['client_cpu_cores']:.2f} | {r['machine_busy_cores']:.2f} | {r['worker_peak_rss_mb']:.0f} "
            f"| {r['rows_per_insert']:,.0f} | {r['writer_busy']:.0%} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15, help="seconds per transport run")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--concurrency", type=int, default=8, help="threads (requests in flight) per client process")
    parser.add_argument("--spans", type=int, default=1000, help="spans per request")
    parser.add_argument("--requests", type=int, default=20, help="distinct pre-built requests")
    parser.add_argument("--transports", default="grpc,http")
    parser.add_argument("--no-half-load", action="store_true", help="skip the gRPC run paced at half the maximum")
    parser.add_argument(
        "--paced-duration", type=float, default=30, help="seconds of the half-load run (~15 requests/s)"
    )
    parser.add_argument("--floor-seconds", type=float, default=5)
    add_set_argument(parser, example="GATEWAY_PREPARE_PROCESSES=1")
    parser.add_argument("--py-spy", metavar="FILE", help="record the worker with py-spy during the gRPC max run")
    parser.add_argument("--py-spy-gil", action="store_true", help="with --py-spy: only samples that hold the GIL")
    parser.add_argument("--out", metavar="FILE", help="write the results as .json, or markdown otherwise")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the gateway's data directory and log (on ext4 without a journal, as on the benchmark VM, deleting it slows the file creation of a run started in the next "
        "few minutes: see docs/BENCHMARKS.md; remove kept directories between sessions)",
    )
    args = parser.parse_args()

    rng = random.Random(args.seed)
    payloads = [build_request(rng, args.spans).SerializeToString() for _ in range(args.requests)]
    size = sum(map(len, payloads)) / len(payloads)
    print(
        f"{args.requests} requests of {args.spans} spans, {size / 1024:.0f} KiB each on average ({size / args.spans:.0f} B/span)"
    )

    with mp.get_context("spawn").Pool(1) as pool:  # chDB stays out of this process
        busy0, t0 = machine_busy_seconds(), time.monotonic()
        floor = pool.apply(floors, (payloads, args.spans, args.floor_seconds))
        floors_busy = (machine_busy_seconds() - busy0) / (time.monotonic() - t0)
    print(f"in-process floors, 1 thread (machine busy {floors_busy:.2f} cores of {os.cpu_count()} meanwhile):")
    for f in floor:
        stages = ", ".join(f"{k[:-3]} {v:.1f}" for k, v in f.items() if k.endswith("_ms") and k != "per_request_ms")
        print(f"  {f['run']}: {f['spans_per_s']:,.0f} spans/s ({stages} ms/request)")

    gateway = Gateway(Path(tempfile.mkdtemp(prefix="otlpgw-bench-")) / "data", dict(args.set))
    runs, code, idle_rss = [], None, None
    try:
        gateway.start()
        idle_rss = gateway.rss_mb("VmRSS")
        idle_by_process = gateway.rss_by_process("VmRSS")
        print(
            f"gateway pid {gateway.process.pid}, worker pid {gateway.worker} "
            f"(with its {len(gateway.processes()) - 1} processes {idle_rss:.0f} MB RSS idle), "
            f"data {gateway.data_dir} (removed at the end unless --keep)"
        )
        for transport in args.transports.split(","):
            spy = start_py_spy(gateway.worker, args) if transport == "grpc" and args.py_spy else None
            runs.append(drive(gateway, transport, args, payloads))
            if spy:
                spy.wait()
            if transport == "grpc" and not args.no_half_load:
                runs.append(
                    drive(
                        gateway, "grpc", args, payloads, rate=runs[-1]["spans_per_s"] / 2, duration=args.paced_duration
                    )
                )
        peak_by_process = gateway.rss_by_process("VmHWM")
    finally:
        code = gateway.stop()
    acked = sum(r["acked_spans"] for r in runs)
    stored = gateway.stored_spans()
    # This machine's speed drifts (a shared VM): the parse-only floor is measured again after the
    # runs, and "vs parse-only" is against the mean of the two.
    with mp.get_context("spawn").Pool(1) as pool:
        after = pool.apply(floors, (payloads, args.spans, args.floor_seconds, ("parse only",)))[0]
    after["run"] = "parse only, again after the runs"
    parse_rate = (floor[0]["spans_per_s"] + after["spans_per_s"]) / 2
    floor.insert(1, after)
    print(f"  parse only, again after the runs: {after['spans_per_s']:,.0f} spans/s")
    if not args.keep:
        shutil.rmtree(gateway.data_dir.parent)
    print(f"\ngateway exit code {code}\n")
    report = "\n".join(
        [
            f"{args.requests} distinct requests of {args.spans} spans ({size / 1024:.0f} KiB); {args.clients} client process(es) "
            f"x {args.concurrency} in flight; {args.duration:g} s per run at max, {args.paced_duration:g} s paced"
            + "".join(f"; {name}={value}" for name, value in args.set)
            + "\n",
            table(floor, runs, parse_rate),
            f'\n"vs parse-only" is against {parse_rate:,.0f} spans/s, the mean of the two parse-only floors; '
            f"machine busy during the floors {floors_busy:.2f} cores; gateway RSS idle after start {idle_rss:.0f} MB "
            "(gateway: the gunicorn worker and its prepare processes, summed); "
            f"spans acknowledged {acked:,}, stored {stored:,}",
        ]
    )
    report += "\n\nRSS by process, MB, idle after start / peak (VmHWM) at the end: " + ", ".join(
        f"{role} {idle_by_process.get(role, 0):.0f} / {peak:.0f}" for role, peak in peak_by_process.items()
    )
    print(report)
    if args.out:
        summary = dict(
            vars(args),
            request_bytes=size,
            floors=floor,
            runs=runs,
            acked_spans=acked,
            stored_spans=stored,
            floors_machine_busy_cores=floors_busy,
            gateway_exit_code=code,
            worker_idle_rss_mb=idle_rss,
        )
        Path(args.out).write_text(json.dumps(summary, indent=2) if args.out.endswith(".json") else report + "\n")
    return 0 if code == 0 and acked == stored and not any(r["errors"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
