"""Two gateway processes share one tenant's item rate through the real Redis: the items one
accepts are gone from the other's allowance, and everything they accepted is stored. (How
close to a limit they hold under load is a wall-clock figure: bench/rate_precision.py.)"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import redis

from tests import otlp_requests
from tests.clients import http_post
from tests.test_serve import ROOT, Gateway, _query

pytestmark = pytest.mark.slow
REDIS_URL = "redis://127.0.0.1:6379/0"
# One item a second refills nothing that matters while the test runs (a request is 50 items);
# the burst is what the two processes share.
LIMIT = 1
BURST = 100
SPANS_PER_REQUEST = 50

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
    env = {
        "GATEWAY_DATA_DIR": str(first_dir),
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        "GATEWAY_CACHE_URL": shared_redis,
        "PATH": "/usr/bin:/bin",
    }
    setup = subprocess.run(
        [sys.executable, "-c", _SETUP.format(limit=LIMIT, burst=BURST)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert setup.returncode == 0, setup.stderr[-2000:]
    key = setup.stdout.split()[-1]
    shutil.copytree(first_dir, second_dir)  # the same tenants, keys and secret: as replicas share a database
    shutil.rmtree(second_dir / "clickhouse", ignore_errors=True)

    redis_env = {"GATEWAY_CACHE_URL": shared_redis}
    body = otlp_requests.traces_request(SPANS_PER_REQUEST).SerializeToString()
    with Gateway(first_dir, redis_env, ("--no-demo",)) as one, Gateway(second_dir, redis_env, ("--no-demo",)) as two:
        urls = [f"http://127.0.0.1:{one.http_port}", f"http://127.0.0.1:{two.http_port}"]
        # The burst holds two requests: one through each process. A third, through either,
        # finds the shared bucket empty (each alone would still have room for one more).
        statuses = [http_post(url, "traces", body, key=key).status for url in urls]
        statuses += [http_post(url, "traces", body, key=key).status for url in urls]
    assert statuses == [200, 200, 429, 429]
    stored = [len(_query(d, "SELECT SpanId FROM otel_traces")) for d in (first_dir, second_dir)]
    assert stored == [SPANS_PER_REQUEST, SPANS_PER_REQUEST]
