"""Shared fixtures: one chDB store and pipeline per test run (one process owns a chDB path),
real OTLP/gRPC and OTLP/HTTP endpoints in this process, and tenants with keys.

Tests isolate from each other by tenant: every test makes its own tenant and reads back only
through the tenant-scoped reader, exactly as the product does.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass

import grpc
import pytest
from django.conf import settings

import storage
from gateway.otlp import runtime
from gateway.otlp.grpc_server import build_server
from storage.clickhouse import Store
from storage.reader import TenantReader
from tenants.audit import Actor
from tenants.encryption import reader_for
from tenants.models import Tenant
from tenants.services import create_tenant_with_key

_tenant_numbers = itertools.count(1)


@pytest.fixture(scope="session", autouse=True)
def store() -> Store:
    """The process's store (storage.get_store()), as every part of the gateway reaches it,
    migrated as a serving process migrates it on start."""
    store = storage.get_store()
    store.migrate()
    return store


@pytest.fixture(scope="session")
def pipeline(store):
    pipeline = runtime.build_pipeline(store=store, migrate=False)
    previous = runtime.install_pipeline(pipeline)
    yield pipeline
    pipeline.stop()
    runtime.install_pipeline(previous)


@pytest.fixture(scope="session")
def grpc_target(pipeline) -> str:
    server, port = build_server(
        runtime.get_pipeline,
        address="127.0.0.1:0",
        max_message_bytes=settings.GATEWAY_MAX_REQUEST_BYTES,
        threads=8,
    )
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
def grpc_channel(grpc_target):
    channel = grpc.insecure_channel(grpc_target)
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def http_server(pipeline, django_db_setup):
    """The gateway's Django app behind the production HTTP edge (gateway/edge.py), in this
    process, on the settings' limits."""
    from django.core.wsgi import get_wsgi_application

    from gateway.edge import ServerThread, limits_from_settings

    server = ServerThread(get_wsgi_application(), limits=limits_from_settings()).start()
    yield server
    server.stop()


@pytest.fixture
def http_url(http_server, transactional_db) -> str:
    """Base URL of the real HTTP edge serving the gateway."""
    return f"http://127.0.0.1:{http_server.port}"


@dataclass
class TenantWithKey:
    tenant: Tenant
    key: str
    reader: TenantReader

    def rows(self, sql: str, **parameters):
        return self.reader.rows(sql, parameters)

    def count(self, table: str) -> int:
        return self.reader.query(f"SELECT count() FROM {table} WHERE TenantId = {{tenant_id:String}}").result_rows[0][0]


@pytest.fixture
def make_tenant(store, transactional_db):
    def make(name: str | None = None) -> TenantWithKey:
        number = next(_tenant_numbers)
        issued = create_tenant_with_key(
            actor=Actor.system("tests"), name=name or f"Tenant {number}", slug=f"tenant-{number}"
        )
        tenant = issued.api_key.tenant
        return TenantWithKey(tenant=tenant, key=issued.secret, reader=reader_for(store, str(tenant.id)))

    return make


@pytest.fixture
def tenant(make_tenant) -> TenantWithKey:
    return make_tenant()


class Clock:
    """Seconds that pass only when a test says so."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def ratelimit_clock(monkeypatch) -> Clock:
    """django-ratelimit's windows (the console's sign-in limit, requests per second) on a
    hand-moved clock, so that no window ends in the middle of a test."""
    import django_ratelimit.core

    clock = Clock()
    monkeypatch.setattr(django_ratelimit.core, "time", type("FakeTime", (), {"time": staticmethod(clock)}))
    return clock


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Rate-limit counters live in the cache; no test inherits another's."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def console_user(db):
    """A staff user holding one console role ("Gateway admin" or "Auditor")."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission

    from tenants.roles import grant_roles

    # Transactional tests flush the database, data-migration rows included; put the roles back.
    grant_roles(Group, Permission)

    def make(role: str, username: str | None = None, password: str = "correct horse battery staple"):
        user = get_user_model().objects.create_user(
            username=username or role.lower().replace(" ", "-"), password=password, is_staff=True
        )
        user.groups.add(Group.objects.get(name=role))
        user.raw_password = password
        return user

    return make


@contextlib.contextmanager
def unwritable_table(store: Store, table: str):
    """`table`'s data directory made immutable (chattr +i, as root): ClickHouse can read the
    table and its columns, but no INSERT can create a part in it. Skips where that cannot be
    done, saying why."""
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("making a table unwritable needs root and chattr (CI runs as root)")
    path = store.query(
        "SELECT data_paths[1] FROM system.tables WHERE database = currentDatabase() AND name = {name:String}",
        {"name": table},
    ).result_rows[0][0]
    made = subprocess.run(["chattr", "+i", path], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i {path} failed: {made.stderr.strip()} (the file system may not support it)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", path], check=True)
