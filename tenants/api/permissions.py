"""REST API permissions from the console roles (Django model permissions, view included)."""

from __future__ import annotations

from rest_framework import permissions


class RolePermissions(permissions.DjangoModelPermissions):
    """Reads need `view_<model>`, writes the usual add/change/delete. A view can name the
    permission an extra action needs with `action_permissions = {"revoke": "change", ...}`."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }

    def has_permission(self, request, view):
        if not request.user or not request.user.is_authenticated:
            return False
        needed = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
        if needed is not None:
            model = self._queryset(view).model
            return request.user.has_perm(f"{model._meta.app_label}.{needed}_{model._meta.model_name}")
        return super().has_permission(request, view)
