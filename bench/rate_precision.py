"""How closely two gateway processes sharing one Redis hold one tenant's item rate, driven at
three times the limit (a wall-clock figure, so a benchmark: tests/test_rate_precision.py checks
only that the allowance is shared).

    ./dev test --co -q >/dev/null   # installs the test extras once
    .venv/bin/python bench/rate_precision.py [--limit 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from tests import otlp_requests  # noqa: E402
from tests.clients import http_post  # noqa: E402
from tests.test_rate_precision import _SETUP  # noqa: E402
from tests.test_serve import Gateway, _query  # noqa: E402

SPANS_PER_REQUEST = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--limit", type=int, default=1000, help="items per second")
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--senders", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="otlpgw-rate-"))
    first_dir, second_dir = work / "a", work / "b"
    first_dir.mkdir()
    env = {
        "GATEWAY_DATA_DIR": str(first_dir),
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        "GATEWAY_CACHE_URL": args.redis,
        "PATH": "/usr/bin:/bin",
    }
    setup = subprocess.run(
        [sys.executable, "-c", _SETUP.format(limit=args.limit, burst=args.burst)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    key = setup.stdout.split()[-1]
    shutil.copytree(first_dir, second_dir)
    shutil.rmtree(second_dir / "clickhouse", ignore_errors=True)
    redis_env = {"GATEWAY_CACHE_URL": args.redis}
    body = otlp_requests.traces_request(SPANS_PER_REQUEST).SerializeToString()
    with Gateway(first_dir, redis_env, ("--no-demo",)) as one, Gateway(second_dir, redis_env, ("--no-demo",)) as two:
        urls = [f"http://127.0.0.1:{one.http_port}", f"http://127.0.0.1:{two.http_port}"]
        accepted, refused, errors, last_sent = [0, 0], [0], [], [0.0]
        lock = threading.Lock()
        interval = SPANS_PER_REQUEST / (3 * args.limit) * args.senders  # together: 3x the limit
        start = time.monotonic()

        def sender(number: int) -> None:
            next_at = start + number * interval / args.senders
            while next_at < start + args.seconds:
                time.sleep(max(0.0, next_at - time.monotonic()))
                which = number % 2
                sent = time.monotonic()
                status = http_post(urls[which], "traces", body, key=key).status
                with lock:
                    last_sent[0] = max(last_sent[0], sent)
                    if status == 200:
                        accepted[which] += SPANS_PER_REQUEST
                    elif status == 429:
                        refused[0] += 1
                    else:
                        errors.append(status)
                next_at += interval

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(args.senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = last_sent[0] - start  # admission takes items on arrival: the rate is over sending
    stored = [len(_query(d, "SELECT SpanId FROM otel_traces")) for d in (first_dir, second_dir)]
    rate = sum(accepted) / elapsed
    print(
        f"accepted {sum(accepted)} spans in {elapsed:.2f}s = {rate:.0f}/s (limit {args.limit}, "
        f"{rate / args.limit:.1%}); per process {accepted}; stored {stored}; {refused[0]} throttled; "
        f"errors {errors or 'none'}"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
