"""A creation's files go with its row, however the row goes: the owner's delete, the admin, or the
owner's account deleted (the rows cascade, and each sends ``post_delete``). The files are deleted
once the deletion commits, so a rolled-back delete keeps them."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from realtime_site.gallery.models import Creation

log = logging.getLogger("realtime_site.gallery")


@receiver(post_delete, sender=Creation, dispatch_uid="gallery-creation-files")
def delete_the_files(sender: type[Creation], instance: Creation, **kwargs: Any) -> None:
    files = [f for f in (instance.result, instance.sketch, instance.thumbnail) if f]

    def delete() -> None:
        for file in files:
            try:
                file.delete(save=False)
            except Exception:  # the storage away: the row is gone all the same; say what was left
                log.exception("could not delete %s of creation %s", file.name, instance.pk)

    transaction.on_commit(delete)
