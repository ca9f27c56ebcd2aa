"""Keeping a creation and letting it go (sync; a view's thread): the owner's quota is checked first,
the files go through Django's storage (the local file system, or S3 when configured), the thumbnail
is made once, and nothing is left behind when a save fails or a creation is deleted."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Count, Sum

from realtime_site.gallery.models import Creation
from realtime_site.gallery.pictures import Picture

__all__ = ["QuotaFull", "delete", "keep", "usage_of"]


class QuotaFull(Exception):
    """The owner's gallery is full; the message says what to do."""


def usage_of(owner: AbstractBaseUser) -> tuple[int, int]:
    """(creations, bytes) the owner keeps."""
    totals = Creation.objects.filter(owner=owner).aggregate(n=Count("id"), bytes=Sum("bytes"))
    return totals["n"] or 0, totals["bytes"] or 0


def keep(owner: AbstractBaseUser, result: Picture, sketch: Picture | None, params: dict[str, Any], *,
         small: bytes, kind: str = Creation.Kind.PICTURE, frames: int = 1) -> Creation:  # fmt: skip
    """Store a creation with its files and its thumbnail ``small`` (made beforehand, off the database
    thread: ``pictures.thumbnail``), within the owner's quota (``QuotaFull`` otherwise)."""
    size = len(result.data) + len(small) + (len(sketch.data) if sketch else 0)
    with transaction.atomic():
        # One keep at a time per owner: the quota holds under concurrent keeps too.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        count, used = usage_of(owner)
        most, most_bytes = settings.REALTIME_GALLERY_MAX_ITEMS, settings.REALTIME_GALLERY_MAX_BYTES
        if count >= most:
            raise QuotaFull(f"your gallery holds {count} creations, the most it may: delete some to keep more")
        if used + size > most_bytes:
            raise QuotaFull(f"your gallery would pass its {most_bytes // 2**20} MB: delete some to keep more")
        creation = Creation(owner=owner, kind=kind, frames=frames, result_type=result.content_type, bytes=size,
                            **params)  # fmt: skip
        saved: list[Any] = []
        try:
            creation.result.save(f"result.{result.extension}", ContentFile(result.data), save=False)
            saved.append(creation.result)
            if sketch is not None:
                creation.sketch.save(f"sketch.{sketch.extension}", ContentFile(sketch.data), save=False)
                saved.append(creation.sketch)
            creation.thumbnail.save("thumbnail.jpg", ContentFile(small), save=False)
            saved.append(creation.thumbnail)
            creation.save()
        except Exception:
            for file in saved:  # nothing stored for a creation that is not
                file.delete(save=False)
            raise
    return creation


def delete(creation: Creation) -> None:
    """The creation; its files follow once that commits (``signals``)."""
    creation.delete()
