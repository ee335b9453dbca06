"""Browsers can export (CORS), and a tenant's key works only from that tenant's own sites:
preflights answered from the gateway's list, the request itself checked against the tenant's,
and a real headless Chromium sending with fetch() from a page on another origin."""

from __future__ import annotations

import functools
import http.client
import http.server
import threading

import pytest
from django.test import override_settings

from gateway.otlp import runtime
from tenants.audit import Actor
from tenants.services import update_tenant
from tests import otlp_requests
from tests.test_browser import browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)
SYSTEM = Actor.system("tests")
SITE = "https://app.example.com"
JSON_BODY = otlp_requests.dumps(otlp_requests.traces_json())
SPANS = sum(len(ss["spans"]) for rs in otlp_requests.traces_json()["resourceSpans"] for ss in rs["scopeSpans"])


def _request(port: int, method: str, headers: dict, body: bytes | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, "/v1/traces", body=body, headers=headers)
    response = connection.getresponse()
    reply = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    connection.close()
    return reply


def _preflight(port: int, origin: str, headers: str = "content-type,authorization"):
    return _request(
        port,
        "OPTIONS",
        {"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers},
    )


@override_settings(GATEWAY_CORS_ALLOWED_ORIGINS=[SITE, "https://*.example.org"])
def test_preflights_are_answered_from_the_gateways_list(http_server, http_url):
    status, headers, _ = _preflight(http_server.port, SITE)
    assert status == 204
    assert headers["access-control-allow-origin"] == SITE
    assert headers["access-control-allow-methods"] == "POST"
    assert headers["access-control-allow-headers"] == "content-type, authorization"
    assert int(headers["access-control-max-age"]) > 0 and headers["vary"] == "Origin"
    assert _preflight(http_server.port, "https://shop.example.org")[0] == 204
    status, headers, body = _preflight(http_server.port, "https://evil.example.net")
    assert status == 403 and "access-control-allow-origin" not in headers and b"GATEWAY_CORS_ALLOWED_ORIGINS" in body
    assert _preflight(http_server.port, SITE, headers="content-type,x-secret")[0] == 403
    # Without an Origin an OPTIONS is no preflight: the path takes POST.
    assert _request(http_server.port, "OPTIONS", {})[0] == 405


@override_settings(GATEWAY_CORS_ALLOWED_ORIGINS=["*"])
def test_a_browser_request_must_come_from_one_of_the_tenants_origins(make_tenant, http_server, http_url):
    ours, other = make_tenant(), make_tenant()
    update_tenant(actor=SYSTEM, tenant=ours.tenant, allowed_origins=[SITE + "/"])
    ours.tenant.refresh_from_db()
    assert ours.tenant.allowed_origins == [SITE]  # stored normalised
    headers = {"Content-Type": "application/json", "Origin": SITE}
    status, reply_headers, _ = _request(
        http_server.port, "POST", {**headers, "Authorization": f"Bearer {ours.key}"}, JSON_BODY
    )
    assert status == 200 and reply_headers["access-control-allow-origin"] == SITE
    status, reply_headers, body = _request(
        http_server.port, "POST", {**headers, "Authorization": f"Bearer {other.key}"}, JSON_BODY
    )
    assert status == 403 and reply_headers["access-control-allow-origin"] == SITE  # the page can read why
    assert b"does not allow browser requests from https://app.example.com" in body
    # SDKs and Collectors send no Origin: not affected.
    status, _, _ = _request(
        http_server.port,
        "POST",
        {"Content-Type": "application/json", "Authorization": f"Bearer {other.key}"},
        JSON_BODY,
    )
    assert status == 200
    assert ours.count("otel_traces") == other.count("otel_traces") == SPANS
    assert runtime.get_pipeline().batcher.drain(30)
    outcomes = {
        r["Outcome"] for r in other.rows("SELECT Outcome FROM gateway_usage WHERE TenantId = {tenant_id:String}")
    }
    assert outcomes == {"unauthorized", "accepted"}


def test_allowed_origins_are_validated(tenant):
    for bad in (["ftp://x.example.com"], ["https://app.example.com/path"], "https://a.example.com", [7]):
        with pytest.raises(ValueError):
            update_tenant(actor=SYSTEM, tenant=tenant.tenant, allowed_origins=bad)


PAGE = """<!doctype html><title>rum</title><script>
window.send = async (url, key, body) => {
  try {
    const reply = await fetch(url, {method: "POST", body,
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + key}});
    return [reply.status, await reply.text()];
  } catch (error) { return [0, String(error)]; }
};
</script>"""


@pytest.fixture
def site(tmp_path):
    """A page on an origin of its own (another port on this machine)."""
    (tmp_path / "index.html").write_text(PAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.slow
def test_headless_chromium_exports_from_the_tenants_site_only(browser, site, make_tenant, http_server, http_url):  # noqa: F811
    ours, other = make_tenant(), make_tenant()
    update_tenant(actor=SYSTEM, tenant=ours.tenant, allowed_origins=[site])
    url = f"http://127.0.0.1:{http_server.port}/v1/traces"
    page = browser.new_page()
    try:
        with override_settings(GATEWAY_CORS_ALLOWED_ORIGINS=[site]):
            page.goto(f"{site}/index.html")
            status, _ = page.evaluate("([u, k, b]) => send(u, k, b)", [url, ours.key, JSON_BODY.decode()])
            assert status == 200
            status, text = page.evaluate("([u, k, b]) => send(u, k, b)", [url, other.key, JSON_BODY.decode()])
            assert status == 403 and "does not allow browser requests" in text
        # With the gateway's list empty the browser is stopped at the preflight.
        status, text = page.evaluate("([u, k, b]) => send(u, k, b)", [url, ours.key, JSON_BODY.decode()])
        assert status == 0 and "Failed to fetch" in text
    finally:
        page.close()
    assert ours.count("otel_traces") == SPANS and other.count("otel_traces") == 0
