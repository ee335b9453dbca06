"""REST API authentication with console tokens (`Authorization: Bearer otlpgwc_...`)."""

from __future__ import annotations

import secrets

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from tenants.keys import CONSOLE_TOKEN_PREFIX, hash_key, is_well_formed, visible_prefix
from tenants.models import ConsoleToken


class ConsoleTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode(errors="replace").split()
        if len(header) != 2 or header[0].lower() != "bearer":
            return None
        secret = header[1]
        if not is_well_formed(secret, CONSOLE_TOKEN_PREFIX):
            raise exceptions.AuthenticationFailed("not a console API token (they start with otlpgwc_)")
        hashed = hash_key(secret)
        for token in ConsoleToken.objects.select_related("user").filter(
            prefix=visible_prefix(secret, CONSOLE_TOKEN_PREFIX)
        ):
            if secrets.compare_digest(token.hashed_token, hashed):
                if token.revoked_at is not None:
                    raise exceptions.AuthenticationFailed(f"API token {token.prefix}… was revoked")
                if not token.user.is_active:
                    raise exceptions.AuthenticationFailed("the token's user is inactive")
                return token.user, token
        raise exceptions.AuthenticationFailed("unknown API token")

    def authenticate_header(self, request):
        return self.keyword


class ConsoleTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes ConsoleTokenAuthentication."""

    target_class = "tenants.api.authentication.ConsoleTokenAuthentication"
    name = "consoleToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "otlpgwc_ console token"}
