"""Filters the console's pages share: numbers people can read, outcomes in words."""

from __future__ import annotations

from django import template

register = template.Library()

OUTCOME_LABELS = {
    "accepted": "accepted",
    "partially_accepted": "partially accepted",
    "throttled": "throttled",
    "over_quota": "over quota",
    "invalid": "invalid",
    "unauthorized": "unauthorized",
    "storage_unavailable": "storage unavailable",
    "internal_error": "internal error",
}


@register.filter
def grouped(number) -> str:
    """12345678 -> "12,345,678"."""
    try:
        return f"{int(number):,}"
    except (TypeError, ValueError):
        return "0"


@register.filter
def get(mapping, key):
    return (mapping or {}).get(key, 0)


@register.filter
def outcome_label(outcome: str) -> str:
    return OUTCOME_LABELS.get(outcome, str(outcome).replace("_", " "))


@register.filter
def percent(share: float) -> str:
    return f"{share * 100:.0f}%" if share >= 0.01 or not share else "<1%"


@register.filter
def subtract(a, b) -> int:
    return int(a or 0) - int(b or 0)


@register.simple_tag(takes_context=True)
def query_with(context, **changes) -> str:
    """The page's query string with `changes` applied (a paginator's links keep the filters)."""
    params = context["request"].GET.copy()
    for name, value in changes.items():
        params[name] = value
    return params.urlencode()


@register.filter
def spaced(name: str) -> str:
    """clickhouse_writes -> "clickhouse writes"."""
    return str(name).replace("_", " ")
