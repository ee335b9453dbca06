"""A full disk under the embedded ClickHouse: the gateway answers 503 and stores nothing it
does not acknowledge; once there is room, the exporters' retries are stored, and at the end
every request is stored once and metered once. The disk is a small tmpfs the test mounts
(as root; CI runs as root); it skips, saying why, where it cannot."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time

import pytest

from tests.clients import post_numbered_traces
from tests.test_serve import Gateway, _query

pytestmark = pytest.mark.slow
SPANS = 40


def _send(port: int, key: str, number: int) -> int | None:
    return post_numbered_traces(port, key, number, SPANS)


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk) -> None:
    """Write zeros to `disk` until it has no room left."""
    chunk = b"\0" * (1 << 20)
    with open(disk / "filler", "wb", buffering=0) as filler:
        for size in (1 << 20, 4096, 512):
            try:
                while True:
                    filler.write(chunk[:size])
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def test_a_full_disk_loses_nothing_and_stores_nothing_twice(tmp_path, small_disk):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {"GATEWAY_CLICKHOUSE_URL": f"chdb://{small_disk / 'clickhouse'}", "GATEWAY_READY_MIN_FREE_MB": "0"}
    statuses: dict[int, list[int]] = {}
    with Gateway(data_dir, extra_env=env) as gateway:
        key = next(word for word in gateway.text().split() if word.startswith("otlpgw_"))
        for number in range(1, 6):
            statuses[number] = [_send(gateway.http_port, key, number)]
        assert all(replies == [200] for replies in statuses.values()), gateway.text()
        _fill(small_disk)
        for number in range(6, 16):
            statuses[number] = [_send(gateway.http_port, key, number)]
        full = [replies[0] for number, replies in statuses.items() if number >= 6]
        assert set(full) <= {200, 503}, full
        assert 503 in full, "the disk was full, and every request was stored: " + gateway.text()[-3000:]
        (small_disk / "filler").unlink()
        # The exporters retry what was refused; one whose reply was lost sends it again.
        statuses[1].append(_send(gateway.http_port, key, 1))
        deadline = time.monotonic() + 60
        for number, replies in statuses.items():
            while replies[-1] != 200:
                assert time.monotonic() < deadline, (number, replies, gateway.text()[-3000:])
                time.sleep(0.5)
                replies.append(_send(gateway.http_port, key, number))
    stored = {
        int(trace_id, 16): count
        for trace_id, count in _query(small_disk, "SELECT TraceId, count() FROM otel_traces GROUP BY TraceId")
    }
    assert stored == dict.fromkeys(statuses, SPANS)  # every request, once and whole
    requests, accepted = _query(
        small_disk, "SELECT sum(Requests), sum(ItemsAccepted) FROM gateway_usage WHERE Outcome = 'accepted'"
    )[0]
    assert (int(requests), int(accepted)) == (len(statuses), len(statuses) * SPANS)  # metered once
