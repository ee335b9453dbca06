"""A real headless Chromium drives the console: an admin creates a tenant and a key (seen once)
and revokes it; an auditor cannot edit and downloads an export that verifies.

Screenshots go to $GATEWAY_SCREENSHOT_DIR (default: the test's tmp dir)."""

from __future__ import annotations

import io
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from tenants.audit_export import public_key_pem, verify_export
from tenants.models import ApiKey, Tenant
from tenants.roles import AUDITOR, GATEWAY_ADMIN
from tests import otlp_requests
from tests.clients import http_post

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECRET = re.compile(r"otlpgw_[0-9A-Za-z]{36}")

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the test extras install it
    sync_playwright = None


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API keeps an event loop on this thread; the ORM calls made here
    # between page actions are ordinary blocking calls, which Django would otherwise refuse.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if CHROMIUM is None:
        pytest.skip("no Chromium found (Debian package 'chromium'); ./dev test installs it where apt-get works")
    if sync_playwright is None:
        pytest.skip("playwright is not installed")
    with sync_playwright() as p:
        instance = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield instance
        instance.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    directory = Path(os.environ.get("GATEWAY_SCREENSHOT_DIR", tmp_path / "screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


# Every element with text of its own: its color against the first opaque background behind it
# (its own or an ancestor's), as WCAG 2 computes contrast. Text in an <svg> is checked against
# the page behind the chart. Returns the failures, with the text and both colors.
CONTRAST_JS = """
() => {
  const rgb = (c) => { const m = c.match(/[\\d.]+/g).map(Number); return {r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1}; };
  const lum = ({r, g, b}) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const background = (el) => { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.a > 0.5) return c; } return {r: 255, g: 255, b: 255, a: 1}; };
  const failures = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].filter(n => n.nodeType === 3 && n.textContent.trim()).map(n => n.textContent.trim()).join(' ');
    if (!own) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || style.display === 'none' || el.getClientRects().length === 0) continue;
    if (el.closest('.visually-hidden, [hidden], option, select')) continue;
    const box = el.getBoundingClientRect(); if (box.width < 2 || box.height < 2) continue;
    const fg = rgb(el instanceof SVGElement ? style.fill : style.color);
    const l1 = lum(fg), l2 = lum(background(el));
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const needed = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
    if (ratio < needed) failures.push(`${ratio.toFixed(2)} < ${needed}: "${own.slice(0, 40)}" (${style.color} on ${getComputedStyle(el).backgroundColor}) <${el.tagName.toLowerCase()} class="${el.className.baseVal ?? el.className}">`);
  }
  return failures;
}
"""


def _readable(page, what: str) -> None:
    """WCAG 2.1 AA: 4.5:1 for text, 3:1 for large text, on every text of the page."""
    failures = page.evaluate(CONTRAST_JS)
    assert not failures, f"{what}: text under WCAG AA contrast:\n" + "\n".join(failures[:30])


def _login(page, base: str, user) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", user.raw_password)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(user.username)


def test_admin_and_auditor_in_the_console(browser, live_server, console_user, shots, tmp_path, http_url, pipeline):
    base = live_server.url
    admin_user, auditor = console_user(GATEWAY_ADMIN, username="ada"), console_user(AUDITOR, username="audrey")
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)

    page.goto(f"{base}/admin/login/")
    _readable(page, "login page")
    _login(page, base, admin_user)
    expect(page.locator("#overview")).to_be_visible()
    page.screenshot(path=shots / "01-admin-home.png", full_page=True)
    _readable(page, "overview")
    page.goto(f"{base}/admin/tenants/tenant/add/")
    page.fill("#id_name", "Browser Co")
    page.fill("#id_slug", "browser-co")
    page.fill("#id_sensitive_attribute_keys", '["user.email"]')
    page.click("input[name=_save]")
    first_key = page.locator("code.new-secret").inner_text()  # the tenant's first key, shown once
    assert SECRET.fullmatch(first_key)
    page.screenshot(path=shots / "02-tenant-added-with-its-key.png", full_page=True)
    tenant = Tenant.objects.get(slug="browser-co")
    assert first_key.startswith(ApiKey.objects.get(tenant=tenant).prefix)

    # Its exporter sends: two requests stored, one the gateway cannot decode.
    for number in (1, 2):
        trace = otlp_requests.traces_request(5 * number, trace_id=number.to_bytes(16, "big")).SerializeToString()
        assert http_post(http_url, "traces", trace, key=first_key).status == 200
    assert http_post(http_url, "logs", b"not protobuf", key=first_key).status == 400
    assert pipeline.batcher.drain(timeout=30)
    page.click("text=I have stored it")  # back to the tenant's page: its key, usage and refusals
    expect(page.locator("#refusals")).to_contain_text("undecodable")
    expect(page.locator("#tenant-keys")).not_to_contain_text("never")
    page.screenshot(path=shots / "02b-tenant-page.png", full_page=True)
    _readable(page, "tenant page")

    page.goto(f"{base}/admin/")
    expect(page.locator("#failing")).to_contain_text("Browser Co")
    page.screenshot(path=shots / "02c-overview-with-data.png", full_page=True)
    _readable(page, "overview with data")

    page.goto(f"{base}/admin/tenants/apikey/add/")
    # The tenant box searches (autocomplete) rather than listing every tenant.
    page.click(".field-tenant .select2-selection")
    page.fill(".select2-search__field", "browser")
    page.click(".select2-results__option:has-text('Browser Co')")
    page.fill("#id_name", "production")
    page.click("input[name=_save]")
    secret = page.locator("code.new-secret").inner_text()
    assert SECRET.fullmatch(secret)
    page.screenshot(path=shots / "03-key-shown-once.png", full_page=True)
    page.click("text=I have stored it")
    expect(page.locator("#result_list")).to_contain_text(ApiKey.objects.get(tenant=tenant, name="production").prefix)
    assert secret not in page.content()
    page.screenshot(path=shots / "04-key-list.png", full_page=True)
    _readable(page, "key list")
    page.fill("#tenant-filter-tenant", "browser-co")  # the tenant filter: a box, not 10,000 links
    page.press("#tenant-filter-tenant", "Enter")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)

    page.check(f"input[name=_selected_action][value='{ApiKey.objects.get(tenant=tenant, name='production').pk}']")
    page.select_option("select[name=action]", "revoke_keys")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("1 key(s) revoked")
    page.screenshot(path=shots / "05-key-revoked.png", full_page=True)
    assert ApiKey.objects.get(tenant=tenant, name="production").state == "revoked"
    page.click("#logout-form button")

    _login(page, base, auditor)
    page.screenshot(path=shots / "06-auditor-home.png", full_page=True)
    response = page.goto(f"{base}/admin/tenants/tenant/{tenant.pk}/change/")
    assert response.status == 403
    page.goto(f"{base}/admin/tenants/auditevent/")
    expect(page.locator("#result_list")).to_contain_text("key.revoked")
    assert page.locator("input[name=_selected_action]").count() == 0  # nothing to act on
    page.screenshot(path=shots / "07-audit-log.png", full_page=True)
    _readable(page, "audit log")
    page.click("text=Export (signed)")
    page.screenshot(path=shots / "08-export-form.png", full_page=True)
    with page.expect_download() as download_info:
        page.click("input[type=submit]")
    archive = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(archive)

    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        data_name = next(n for n in names if n.startswith("audit-") and n.endswith(".jsonl"))
        report = verify_export(
            zf.read(data_name), zf.read("manifest.json"), zf.read("manifest.json.sig"), public_key_pem()
        )
    assert report.ok, report.problems
    assert b"key.revoked" in zipfile.ZipFile(io.BytesIO(archive.read_bytes())).read(data_name)
