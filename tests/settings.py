"""Test settings: the embedded defaults, under a fresh data directory per test run."""

import os
import tempfile

os.environ.setdefault("GATEWAY_DATA_DIR", tempfile.mkdtemp(prefix="otlpgw-test-"))
# The pipeline prepares rows in a worker process, as the embedded gateway does by default (one
# is enough to exercise it; tests/test_prepare.py covers the request-thread path and several).
os.environ.setdefault("GATEWAY_PREPARE_PROCESSES", "1")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")

from gateway.settings import *  # noqa: E402,F401,F403
