"""Pages of every REST list: `?limit=` (a larger one gets MAX_LIMIT) and `?offset=` (refused
beyond MAX_OFFSET), documented with those bounds, so that no number a client sends reaches the
database as one it cannot hold."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Far beyond any list the gateway keeps, and well inside the int64 that databases take for OFFSET.
MAX_OFFSET = 10**12


def _number(request, name: str, default: int, maximum: int, *, cap: bool) -> int:
    """The parameter as a whole number from 0 to `maximum`; above it, `maximum` when `cap`
    (a page larger than the largest is the largest), else a 400."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: f"{raw[:40]!r} is not a whole number"}) from None
    if value > maximum and cap:
        return maximum
    if not 0 <= value <= maximum:
        raise ValidationError({name: f"must be from 0 to {maximum}, got {raw[:40]}"})
    return value


class Pages(LimitOffsetPagination):
    default_limit = DEFAULT_LIMIT
    max_limit = MAX_LIMIT

    def get_limit(self, request):
        # 0 asks for the default page, as LimitOffsetPagination treats it.
        limit = _number(request, self.limit_query_param, self.default_limit, self.max_limit, cap=True)
        return limit or self.default_limit

    def get_offset(self, request):
        return _number(request, self.offset_query_param, 0, MAX_OFFSET, cap=False)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        bounds = {self.limit_query_param: (0, self.max_limit), self.offset_query_param: (0, MAX_OFFSET)}
        for parameter in parameters:
            low, high = bounds[parameter["name"]]
            parameter["schema"] = {**parameter["schema"], "minimum": low, "maximum": high}
        return parameters
