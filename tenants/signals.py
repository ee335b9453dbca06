"""Audit entries for changes Django makes itself: logins, console users and their roles."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import receiver

from tenants import audit

User = get_user_model()
USER_FIELDS = ("username", "email", "first_name", "last_name", "is_active", "is_staff", "is_superuser")


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
    audit.record(
        actor=audit.actor_for_user(user),
        action="auth.login",
        target_type="user",
        target_id=user.pk,
        target_repr=user.get_username(),
    )


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        audit.record(
            actor=audit.actor_for_user(user),
            action="auth.logout",
            target_type="user",
            target_id=user.pk,
            target_repr=user.get_username(),
        )


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    username = str(credentials.get("username", ""))[:150]  # Django already masks the password
    audit.record(
        actor=audit.current_actor(fallback="anonymous"),
        action="auth.login_failed",
        target_type="user",
        target_repr=username,
    )


@receiver(pre_save, sender=User)
def _user_before(sender, instance, **kwargs):
    if instance.pk:
        old = sender.objects.filter(pk=instance.pk).values(*USER_FIELDS, "password").first()
        instance._audit_before = old


@receiver(post_save, sender=User)
def _user_after(sender, instance, created, update_fields=None, **kwargs):
    after = {field: getattr(instance, field) for field in USER_FIELDS}
    before = getattr(instance, "_audit_before", None)
    instance._audit_before = None
    if created:
        audit.record(
            actor=audit.current_actor(),
            action="user.created",
            target_type="user",
            target_id=instance.pk,
            target_repr=instance.get_username(),
            changes=audit.diff(None, after),
        )
        return
    if before is None:
        return
    changes = audit.diff({k: before[k] for k in USER_FIELDS}, after)
    if before["password"] != instance.password:
        audit.record(
            actor=audit.current_actor(),
            action="user.password_changed",
            target_type="user",
            target_id=instance.pk,
            target_repr=instance.get_username(),
        )
    if changes["before"] or changes["after"]:
        audit.record(
            actor=audit.current_actor(),
            action="user.updated",
            target_type="user",
            target_id=instance.pk,
            target_repr=instance.get_username(),
            changes=changes,
        )


@receiver(post_delete, sender=User)
def _user_deleted(sender, instance, **kwargs):
    audit.record(
        actor=audit.current_actor(),
        action="user.deleted",
        target_type="user",
        target_id=instance.pk,
        target_repr=instance.get_username(),
    )


@receiver(m2m_changed, sender=User.groups.through)
def _roles_changed(sender, instance, action, reverse, pk_set, **kwargs):
    if action not in ("post_add", "post_remove", "pre_clear") or reverse:
        return
    if action == "pre_clear":
        removed = sorted(instance.groups.values_list("name", flat=True))
        added: list[str] = []
    else:
        names = sorted(Group.objects.filter(pk__in=pk_set or ()).values_list("name", flat=True))
        added, removed = (names, []) if action == "post_add" else ([], names)
    if added or removed:
        audit.record(
            actor=audit.current_actor(),
            action="user.roles_changed",
            target_type="user",
            target_id=instance.pk,
            target_repr=instance.get_username(),
            changes={"before": {}, "after": {"added_roles": added, "removed_roles": removed}},
        )


@receiver(m2m_changed, sender=Group.permissions.through)
def _role_permissions_changed(sender, instance, action, reverse, pk_set, **kwargs):
    if action in ("post_add", "post_remove") and not reverse and pk_set:
        from django.contrib.auth.models import Permission

        codenames = sorted(Permission.objects.filter(pk__in=pk_set).values_list("codename", flat=True))
        key = "added_permissions" if action == "post_add" else "removed_permissions"
        audit.record(
            actor=audit.current_actor(),
            action="role.permissions_changed",
            target_type="group",
            target_id=instance.pk,
            target_repr=instance.name,
            changes={"before": {}, "after": {key: codenames}},
        )
