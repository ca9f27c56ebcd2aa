"""Signals that make revocation cascade from any code path that saves or deletes one object.

Connected by ``AccountsConfig.ready``. ``QuerySet.update`` sends no signal: bulk code uses
``accounts.revocation.revoke_keys`` / ``revoke_tokens`` instead.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save, pre_delete

from realtime_site.accounts import revocation
from realtime_site.accounts.models import ApiKey, IssuedToken

__all__ = ["connect"]


def connect() -> None:
    # Users without a sender: proxies of the user model (the usage admin's) send as themselves.
    post_save.connect(_user_saved, dispatch_uid="accounts.user_saved")
    post_delete.connect(_user_deleted, dispatch_uid="accounts.user_deleted")
    post_save.connect(_key_saved, sender=ApiKey, dispatch_uid="accounts.key_saved")
    pre_delete.connect(_key_deleting, sender=ApiKey, dispatch_uid="accounts.key_deleting")
    post_save.connect(_token_saved, sender=IssuedToken, dispatch_uid="accounts.token_saved")
    post_delete.connect(_token_deleted, sender=IssuedToken, dispatch_uid="accounts.token_deleted")


def _user_saved(sender: type, instance: Any, created: bool, update_fields: Any = None, **kwargs: Any) -> None:
    if created or not isinstance(instance, get_user_model()) or instance.is_active:
        return
    if update_fields is not None and "is_active" not in update_fields:
        return  # e.g. last_login: the flag was not written by this save
    revocation.user_gone(instance.pk, "deactivated")


def _user_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    if isinstance(instance, get_user_model()):
        revocation.user_gone(instance.pk, "deleted")


def _key_saved(sender: type, instance: ApiKey, created: bool, **kwargs: Any) -> None:
    if instance.revoked_at is not None:
        revocation.keys_gone([instance.pk], "revoked", now=instance.revoked_at)


def _key_deleting(sender: type, instance: ApiKey, **kwargs: Any) -> None:
    # Before the delete: its tokens still point at it (then on_delete=SET_NULL unlinks them).
    revocation.keys_gone([instance.pk], "deleted")


def _token_saved(sender: type, instance: IssuedToken, created: bool, **kwargs: Any) -> None:
    if instance.revoked_at is not None:
        revocation.tokens_gone([instance.pk], "revoked")


def _token_deleted(sender: type, instance: IssuedToken, **kwargs: Any) -> None:
    revocation.tokens_gone([instance.pk], "deleted")
