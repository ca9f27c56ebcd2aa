"""A creation: a kept result, the sketch it was made from, and the parameters that made it."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models

__all__ = ["Creation", "new_public_id"]


def new_public_id() -> str:
    return secrets.token_urlsafe(16)  # 128 random bits: the link of a public creation


def _path(creation: Creation, what: str, extension: str) -> str:
    return f"gallery/{creation.owner_id}/{creation.public_id}/{what}.{extension}"


def result_path(creation: Creation, filename: str) -> str:
    return _path(creation, "result", filename.rsplit(".", 1)[-1])


def sketch_path(creation: Creation, filename: str) -> str:
    return _path(creation, "sketch", filename.rsplit(".", 1)[-1])


def thumbnail_path(creation: Creation, filename: str) -> str:
    return _path(creation, "thumbnail", "jpg")


class Creation(models.Model):
    class Kind(models.TextChoices):
        PICTURE = "picture", "picture"
        TIMELAPSE = "timelapse", "timelapse (animated WebP)"

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="creations")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PICTURE)
    created_at = models.DateTimeField(auto_now_add=True)
    public = models.BooleanField(default=False, help_text="anyone with the link may see it, logged out too")
    app = models.CharField(max_length=200)
    prompt = models.CharField(max_length=2000, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    strength = models.FloatField(null=True, blank=True)
    steps = models.PositiveSmallIntegerField(null=True, blank=True)
    size = models.PositiveSmallIntegerField(null=True, blank=True)
    room = models.CharField(max_length=32, blank=True, help_text="the room it was kept from, if any")
    result = models.FileField(upload_to=result_path)
    result_type = models.CharField(max_length=32, help_text="the result's content type")
    sketch = models.FileField(upload_to=sketch_path, blank=True)
    thumbnail = models.FileField(upload_to=thumbnail_path)
    frames = models.PositiveIntegerField(default=1, help_text="pictures in it (a timelapse has many)")
    bytes = models.PositiveBigIntegerField(default=0, help_text="all its files, in bytes")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.public_id} of {self.owner}"

    def parameters(self) -> dict[str, object]:
        """What the drawing page restores (Remix)."""
        return {"app": self.app, "prompt": self.prompt, "seed": self.seed, "strength": self.strength,
                "num_inference_steps": self.steps, "image_size": self.size}  # fmt: skip
