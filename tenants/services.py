"""Services that change tenants and keys (views and commands call these, never the ORM)."""
from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils.text import slugify

from tenants.keys import generate_key
from tenants.models import ApiKey, Tenant

ALL_SCOPES = [choice.value for choice in ApiKey.Scope]


@dataclass(frozen=True)
class IssuedKey:
    """A key just created. `secret` is shown to the person once and then forgotten."""

    api_key: ApiKey
    secret: str


def create_tenant(*, name: str, slug: str | None = None) -> Tenant:
    slug = slug or slugify(name)
    if not slug:
        raise ValueError(f"cannot derive a slug from tenant name {name!r}; pass one explicitly")
    if Tenant.objects.filter(slug=slug).exists():
        raise ValueError(f"a tenant with slug {slug!r} already exists")
    return Tenant.objects.create(name=name, slug=slug)


def issue_key(*, tenant: Tenant, name: str = "default", scopes: list[str] | None = None) -> IssuedKey:
    scopes = list(scopes) if scopes is not None else list(ALL_SCOPES)
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"unknown key scopes {unknown}; choose from {ALL_SCOPES}")
    new_key = generate_key()
    api_key = ApiKey.objects.create(
        tenant=tenant, name=name, prefix=new_key.prefix, hashed_key=new_key.hashed, scopes=scopes
    )
    return IssuedKey(api_key=api_key, secret=new_key.secret)


@transaction.atomic
def create_tenant_with_key(*, name: str, slug: str | None = None) -> IssuedKey:
    tenant = create_tenant(name=name, slug=slug)
    return issue_key(tenant=tenant)
