"""Two gateway processes share one tenant's item rate through the real Redis: driven for about
ten seconds at three times the limit, together they accept the limit (within 5%), and
everything they accepted is stored."""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time

import pytest
import redis

from tests import otlp_requests
from tests.clients import http_post
from tests.test_serve import ROOT, Gateway, _query

pytestmark = pytest.mark.slow
REDIS_URL = "redis://127.0.0.1:6379/0"
LIMIT = 1000           # items per second
BURST = 100            # a tenth of a second's worth
SPANS_PER_REQUEST = 50
DURATION = 10.0

_SETUP = """
import django, os
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from billing.models import Plan, PlanSignal
from billing.services import change_plan
from tenants.audit import Actor
from tenants.services import create_tenant_with_key
actor = Actor.system("precision-test")
plan = Plan.objects.create(name="Precise", slug="precise")
PlanSignal.objects.create(plan=plan, signal="traces", items_per_second={limit}, burst_items={burst})
issued = create_tenant_with_key(actor=actor, name="Precise")
change_plan(actor=actor, tenant=issued.api_key.tenant, plan=plan)
print(issued.secret)
"""


@pytest.fixture
def shared_redis():
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} is not reachable ({exc}); the shared-limit test needs it")
    return REDIS_URL


def test_two_processes_share_one_item_rate(tmp_path, shared_redis):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    env = {"GATEWAY_DATA_DIR": str(first_dir), "DJANGO_SETTINGS_MODULE": "gateway.settings",
           "GATEWAY_CACHE_URL": shared_redis, "PATH": "/usr/bin:/bin"}
    setup = subprocess.run([sys.executable, "-c", _SETUP.format(limit=LIMIT, burst=BURST)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert setup.returncode == 0, setup.stderr[-2000:]
    key = setup.stdout.split()[-1]
    shutil.copytree(first_dir, second_dir)  # the same tenants, keys and secret: as replicas share a database
    shutil.rmtree(second_dir / "clickhouse", ignore_errors=True)

    redis_env = {"GATEWAY_CACHE_URL": shared_redis}
    body = otlp_requests.traces_request(SPANS_PER_REQUEST).SerializeToString()
    with Gateway(first_dir, redis_env, ("--no-demo",)) as one, Gateway(second_dir, redis_env, ("--no-demo",)) as two:
        urls = [f"http://127.0.0.1:{one.http_port}", f"http://127.0.0.1:{two.http_port}"]
        accepted, refused, errors, last_sent = [0, 0], [0], [], [0.0]
        lock = threading.Lock()
        # Eight senders together offer 3x the limit; each waits for its reply, so with fewer a
        # few slow replies (two gateways, their workers and chDB share two cores) would leave
        # the offered rate under the limit for a while.
        senders = 8
        interval = SPANS_PER_REQUEST / (3 * LIMIT) * senders
        start = time.monotonic()

        def sender(number: int) -> None:
            next_at = start + number * interval / senders
            while next_at < start + DURATION:
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

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Admission takes items when a request arrives, so the rate is over the time requests
        # were sent; the time until the last reply would count a slow INSERT at the end too.
        elapsed = last_sent[0] - start
    assert not errors
    rate = sum(accepted) / elapsed
    print(f"accepted {sum(accepted)} spans in {elapsed:.2f}s = {rate:.0f}/s (limit {LIMIT}); "
          f"per process {accepted}; {refused[0]} requests throttled")
    # Shared, the two together stay within one limit (each alone would take ~LIMIT/s, twice as
    # much). How close to the limit they get depends on how fast this machine answers while
    # two gateways share its cores: that is a benchmark's figure, not the suite's (it measured
    # 925-950/s on a busy 2-core machine with either HTTP worker).
    assert rate <= 1.05 * LIMIT + BURST / elapsed
    assert rate >= 0.5 * LIMIT
    assert min(accepted) > 0 and refused[0] > 0
    stored = [len(_query(d, "SELECT SpanId FROM otel_traces")) for d in (first_dir, second_dir)]
    assert stored == accepted
