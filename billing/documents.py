"""Invoices as the files an admin or the API downloads (CSV or HTML)."""

from __future__ import annotations

from django.http import Http404, HttpResponse
from django.template.loader import render_to_string

from billing.invoicing import invoice_csv
from billing.models import Invoice


def invoice_download(invoice: Invoice, fmt: str) -> HttpResponse:
    name = f"invoice-{invoice.tenant.slug}-{invoice.period}"
    if fmt == "csv":
        response = HttpResponse(invoice_csv(invoice), content_type="text/csv")
    elif fmt == "html":
        response = HttpResponse(
            render_to_string("billing/invoice.html", {"invoice": invoice}), content_type="text/html"
        )
    else:
        raise Http404("invoices download as csv or html")
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response
