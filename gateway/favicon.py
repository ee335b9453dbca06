"""/favicon.ico: browsers ask for it on every console page; a 404 there fills logs and tabs."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from django.http import HttpResponse
from django.views.decorators.http import require_safe

ICON = Path(__file__).resolve().parent / "static" / "gateway" / "favicon.ico"


@cache
def _icon() -> bytes:
    return ICON.read_bytes()


@require_safe
def favicon(request):
    response = HttpResponse(_icon(), content_type="image/x-icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response
