"""The REST API fuzzed from its own OpenAPI schema (schemathesis): no input makes a 500, and
every response has the status, media type and shape the schema gives, as an admin and
anonymously. Examples per operation are bounded so the run stays under a minute or two."""

from __future__ import annotations

import pytest
import schemathesis
import yaml
from django.core.handlers.wsgi import WSGIHandler
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from rest_framework.test import APIClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tenants.audit import Actor
from tenants.roles import GATEWAY_ADMIN
from tenants.services import create_console_token, create_tenant_with_key

SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
schema = schemathesis.openapi.from_dict(SCHEMA)
APP = WSGIHandler()
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
# Hypothesis' own health checks would stop a test whose examples are slow or often refused (400):
# both are expected here.
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(autouse=True)
def connections_kept():
    """Requests share the test's database connection (its transaction), as Django's test client
    arranges: the WSGI handler would close it at the end of each request."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def admin_token(console_user):
    # A tenant for the operations that name one, so that their examples get past the 404.
    create_tenant_with_key(actor=Actor.system("tests"), name="Fuzzed", slug="string")
    return create_console_token(actor=Actor.system("tests"), user=console_user(GATEWAY_ADMIN)).secret


@pytest.mark.django_db
def test_the_fuzzed_schema_is_the_served_one(admin_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {admin_token}")
    served = yaml.safe_load(client.get("/api/v1/schema/").content)
    assert served["paths"] == SCHEMA["paths"]


@pytest.mark.django_db
@schema.parametrize()
@FUZZ
def test_api_as_admin(case, admin_token, store):
    response = case.call(app=APP, headers={"Authorization": f"Bearer {admin_token}"})
    case.validate_response(response, checks=CHECKS)


@pytest.mark.django_db
@schema.parametrize()
@settings(FUZZ, max_examples=10)
def test_api_anonymously(case, store):
    response = case.call(app=APP)
    if case.operation.path == "/api/v1/audit/public-key":
        case.validate_response(response, checks=CHECKS)
    else:
        # Refused, or (a path the URL patterns do not match) not found: never an answer.
        assert response.status_code in (401, 403, 404), (case.operation.label, response.status_code)
