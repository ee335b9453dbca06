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


def _login(page, base: str, user) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", user.raw_password)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(user.username)


def test_admin_and_auditor_in_the_console(browser, live_server, console_user, shots, tmp_path):
    base = live_server.url
    admin_user, auditor = console_user(GATEWAY_ADMIN, username="ada"), console_user(AUDITOR, username="audrey")
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)

    _login(page, base, admin_user)
    page.screenshot(path=shots / "01-admin-home.png", full_page=True)
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

    page.goto(f"{base}/admin/tenants/apikey/add/")
    page.select_option("#id_tenant", str(tenant.pk))
    page.fill("#id_name", "production")
    page.click("input[name=_save]")
    secret = page.locator("code.new-secret").inner_text()
    assert SECRET.fullmatch(secret)
    page.screenshot(path=shots / "03-key-shown-once.png", full_page=True)
    page.click("text=I have stored it")
    expect(page.locator("#result_list")).to_contain_text(ApiKey.objects.get(tenant=tenant, name="production").prefix)
    assert secret not in page.content()
    page.screenshot(path=shots / "04-key-list.png", full_page=True)

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
