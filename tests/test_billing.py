"""Invoices: included volume, mid-month plan changes, zero usage, tenants created mid-month,
idempotence; and the whole path from stored usage to an invoice line."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import call_command

from billing.invoicing import generate_invoice, invoice_csv
from billing.models import Invoice, Plan, PlanSignal, Subscription
from billing.services import change_plan
from tenants.audit import Actor
from tenants.models import AuditEvent
from tenants.services import create_tenant

SYSTEM = Actor.system("tests")
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_seeded_plans(db):
    """These tests make their own Free and Pro plans with round prices."""
    Plan.objects.filter(slug__in=["free", "pro"], tenants__isnull=True).delete()


def _plan(slug: str, *, base: str, included: int, per_million: str, per_gb: str = "0") -> Plan:
    plan = Plan.objects.create(name=slug.title(), slug=slug, base_fee=Decimal(base), price_per_gb=Decimal(per_gb))
    for signal in ("traces", "metrics", "logs"):
        PlanSignal.objects.create(
            plan=plan, signal=signal, included_items=included, price_per_million=Decimal(per_million)
        )
    return plan


def _volume(per_tenant_window):
    """Usage as the usage table would report it: items spread evenly over November."""

    def volume(tenant_id, since, until):
        share = Decimal((until - since).total_seconds()) / Decimal((DEC - NOV).total_seconds())
        return {signal: (int(items * share), int(size * share)) for signal, (items, size) in per_tenant_window.items()}

    return volume


def _tenant(slug: str, plan: Plan, since: datetime):
    tenant = create_tenant(actor=SYSTEM, name=slug, slug=slug)
    change_plan(actor=SYSTEM, tenant=tenant, plan=plan, at=since)
    return tenant


@pytest.mark.django_db
def test_included_volume_is_free_and_the_rest_priced_per_million():
    pro = _plan("pro", base="99.00", included=100_000_000, per_million="0.30", per_gb="0.10")
    tenant = _tenant("acme", pro, NOV)
    invoice = generate_invoice(
        tenant=tenant, period="2026-11", volume=_volume({"traces": (150_000_000, 50 * 10**9), "logs": (20_000_000, 0)})
    )
    amounts = {line.description.split(":")[0].split(" plan")[0]: line.amount for line in invoice.lines.all()}
    assert amounts["Pro"] == Decimal("99.00")
    assert amounts["traces"] == Decimal("15.00")  # 50M above the included 100M at 0.30
    assert amounts["logs"] == Decimal("0.00")  # inside the included volume
    assert amounts["ingested data (Pro)"] == Decimal("5.00")  # 50 GB at 0.10
    assert invoice.total == Decimal("119.00")


@pytest.mark.django_db
def test_zero_usage_is_the_base_fee():
    tenant = _tenant("quiet", _plan("pro", base="99.00", included=0, per_million="0.30"), NOV)
    invoice = generate_invoice(tenant=tenant, period="2026-11", volume=_volume({}))
    assert invoice.total == Decimal("99.00")
    assert all(line.amount == 0 for line in invoice.lines.all()[1:])


@pytest.mark.django_db
def test_tenant_created_mid_month_pays_its_share():
    tenant = _tenant(
        "late", _plan("pro", base="90.00", included=0, per_million="0"), datetime(2026, 11, 21, tzinfo=UTC)
    )
    invoice = generate_invoice(tenant=tenant, period="2026-11", volume=_volume({}))
    assert invoice.total == Decimal("30.00")  # 10 of 30 days


@pytest.mark.django_db
def test_plan_change_mid_month_prorates_both_plans():
    free = _plan("free", base="0", included=1_000_000, per_million="0")
    pro = _plan("pro", base="90.00", included=30_000_000, per_million="1.00")
    tenant = _tenant("grower", free, NOV)
    change_plan(actor=SYSTEM, tenant=tenant, plan=pro, at=datetime(2026, 11, 11, tzinfo=UTC))
    invoice = generate_invoice(tenant=tenant, period="2026-11", volume=_volume({"traces": (60_000_000, 0)}))
    lines = list(invoice.lines.all())
    assert [line.description.split(",")[0] for line in lines if "base fee" in line.description] == [
        "Free plan base fee",
        "Pro plan base fee",
    ]
    pro_traces = next(line for line in lines if line.description.startswith("traces") and "(Pro)" in line.description)
    # Pro covers 20 of 30 days: 40M items used there, 20M of its 30M included, so 20M at 1.00.
    assert pro_traces.amount == Decimal("20.00")
    assert invoice.total == Decimal("60.00") + Decimal("20.00")
    subs = list(Subscription.objects.filter(tenant=tenant).order_by("starts_at"))
    assert subs[0].ends_at == subs[1].starts_at and subs[1].ends_at is None
    assert AuditEvent.objects.filter(action="tenant.plan_changed", target_repr="grower").count() == 2


@pytest.mark.django_db
def test_generation_is_idempotent_and_leaves_issued_invoices_alone():
    tenant = _tenant("steady", _plan("pro", base="10.00", included=0, per_million="2.00"), NOV)
    volume = _volume({"metrics": (3_000_000, 0)})
    first = generate_invoice(tenant=tenant, period="2026-11", volume=volume)
    again = generate_invoice(tenant=tenant, period="2026-11", volume=volume)
    assert first.pk == again.pk and again.total == Decimal("16.00") and again.lines.count() == first.lines.count()
    Invoice.objects.filter(pk=first.pk).update(status=Invoice.Status.ISSUED)
    assert generate_invoice(tenant=tenant, period="2026-11", volume=_volume({})).total == Decimal("16.00")
    csv_text = invoice_csv(again)
    assert csv_text.splitlines()[-1].endswith("TOTAL,,,,16.00,USD")


@pytest.mark.django_db
def test_tenant_without_subscription_gets_no_invoice():
    tenant = create_tenant(actor=SYSTEM, name="nobody")
    assert generate_invoice(tenant=tenant, period="2026-11", volume=_volume({})) is None
    with pytest.raises(ValueError, match="not YYYY-MM"):
        generate_invoice(tenant=tenant, period="Nov 2026", volume=_volume({}))


@pytest.mark.django_db(transaction=True)
def test_generate_invoices_command_bills_stored_usage(make_tenant, http_url):
    from gateway.otlp import runtime
    from tests import otlp_requests
    from tests.clients import http_post

    tenant = make_tenant("billed")
    plan = _plan("metered", base="0", included=0, per_million="1000000")  # 1.00 per item, to see it
    change_plan(
        actor=SYSTEM,
        tenant=tenant.tenant,
        plan=plan,
        at=datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0),
    )
    assert (
        http_post(http_url, "traces", otlp_requests.traces_request(7).SerializeToString(), key=tenant.key).status == 200
    )
    period = datetime.now(UTC).strftime("%Y-%m")
    out = io.StringIO()
    serving = runtime.install_pipeline(None)  # as in `manage.py generate_invoices`: no pipeline
    try:
        call_command("generate_invoices", "--period", period, stdout=out)
        assert runtime.current_pipeline() is None  # it read usage without building one
    finally:
        runtime.install_pipeline(serving)
    assert f"{tenant.tenant.slug} {period}: 7.00 USD (draft)" in out.getvalue()
    call_command("generate_invoices", "--period", period, stdout=io.StringIO())
    assert Invoice.objects.filter(tenant=tenant.tenant).count() == 1


@pytest.mark.django_db(transaction=True)
def test_usage_and_invoices_in_the_console_and_the_api(make_tenant, http_url, console_user):
    from django.test import Client
    from django.urls import reverse
    from rest_framework.test import APIClient

    from tenants.roles import AUDITOR, GATEWAY_ADMIN
    from tenants.services import create_console_token
    from tests import otlp_requests
    from tests.clients import http_post

    tenant = make_tenant("charted")
    plan = _plan("metered", base="5.00", included=0, per_million="0")
    PlanSignal.objects.filter(plan=plan, signal="logs").update(items_per_day=4)
    change_plan(actor=SYSTEM, tenant=tenant.tenant, plan=plan)
    assert (
        http_post(http_url, "traces", otlp_requests.traces_request(5).SerializeToString(), key=tenant.key).status == 200
    )
    assert http_post(http_url, "logs", otlp_requests.logs_request(3).SerializeToString(), key=tenant.key).status == 200
    call_command("generate_invoices", "--period", datetime.now(UTC).strftime("%Y-%m"), stdout=io.StringIO())
    invoice = Invoice.objects.get(tenant=tenant.tenant)

    admin_user = console_user(GATEWAY_ADMIN)
    client = Client()
    client.force_login(admin_user)
    page = client.get(reverse("admin:tenants_tenant_change", args=[tenant.tenant.pk])).content.decode()
    assert "traces</strong>: 5 accepted, 0 refused" in page and 'class="usage-chart"' in page
    assert "logs items today: 3 of 4 (75%)" in page
    assert f"{invoice.period} — {invoice.total} USD (draft)" in page
    csv_download = client.get(reverse("admin:billing_invoice_download", args=[invoice.pk, "csv"]))
    assert csv_download["Content-Type"] == "text/csv" and "TOTAL" in csv_download.content.decode()
    html_download = client.get(reverse("admin:billing_invoice_download", args=[invoice.pk, "html"]))
    assert "<h1>Invoice</h1>" in html_download.content.decode()

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {create_console_token(actor=SYSTEM, user=admin_user).secret}")
    usage = api.get(f"/api/v1/tenants/{tenant.tenant.slug}/usage/").json()
    assert {(row["signal"], row["outcome"], row["items_accepted"]) for row in usage} == {
        ("traces", "accepted", 5),
        ("logs", "accepted", 3),
    }
    as_csv = api.get(f"/api/v1/tenants/{tenant.tenant.slug}/usage/", {"format": "csv"})
    assert as_csv.content.decode().splitlines()[0] == "day,signal,outcome,requests,items,items_accepted,bytes"
    invoices = api.get("/api/v1/invoices/", {"tenant": tenant.tenant.slug}).json()["results"]
    assert invoices[0]["total"] == str(invoice.total) and invoices[0]["lines"]
    assert api.get(f"/api/v1/invoices/{invoice.pk}/download/", {"format": "html"}).status_code == 200
    auditor_api = APIClient()
    auditor_api.credentials(
        HTTP_AUTHORIZATION=f"Bearer {create_console_token(actor=SYSTEM, user=console_user(AUDITOR)).secret}"
    )
    assert auditor_api.get("/api/v1/invoices/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_console_generates_invoices(make_tenant, http_url, console_user):
    from django.test import Client
    from django.urls import reverse

    from tenants.roles import AUDITOR, GATEWAY_ADMIN

    tenant = make_tenant("console-billed")
    change_plan(actor=SYSTEM, tenant=tenant.tenant, plan=_plan("flat", base="12.00", included=0, per_million="0"))
    client = Client()
    client.force_login(console_user(GATEWAY_ADMIN))
    assert "Generate invoices" in client.get(reverse("admin:billing_invoice_changelist")).content.decode()
    period = datetime.now(UTC).strftime("%Y-%m")
    bad = client.post(reverse("admin:billing_invoice_generate"), {"period": "11/2026"})
    assert "Enter a month as YYYY-MM" in bad.content.decode()
    response = client.post(reverse("admin:billing_invoice_generate"), {"period": period}, follow=True)
    assert "invoice(s) for" in response.content.decode()
    assert Invoice.objects.get(tenant=tenant.tenant, period=period).total > 0
    assert AuditEvent.objects.filter(action="invoices.generated").exists()
    auditor = Client()
    auditor.force_login(console_user(AUDITOR, username="aud"))
    assert auditor.post(reverse("admin:billing_invoice_generate"), {"period": period}).status_code == 403
