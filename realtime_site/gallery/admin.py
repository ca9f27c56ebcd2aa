"""Staff see every creation and what each user stores, and can remove creations (files and all)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery, Sum
from django.http import HttpRequest
from django.utils.html import format_html

from realtime_site.gallery import keeping
from realtime_site.gallery.models import Creation


def _megabytes(value: int | None) -> str:
    return f"{(value or 0) / 2**20:.1f} MB"


@admin.register(Creation)
class CreationAdmin(admin.ModelAdmin):
    list_display = ("public_id", "thumb", "owner", "kind", "public", "size_of", "owner_storage", "created_at")
    list_filter = ("kind", "public", "created_at")
    search_fields = ("public_id", "owner__username", "prompt")
    list_select_related = ("owner",)
    readonly_fields = [f.name for f in Creation._meta.fields]
    actions = ["remove"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Creation]:
        totals = Creation.objects.filter(owner=OuterRef("owner")).values("owner").annotate(total=Sum("bytes"))
        return super().get_queryset(request).annotate(owner_total=Subquery(totals.values("total")))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Creation | None = None) -> bool:
        return False  # what people made is not edited by staff: only seen, or removed

    @admin.display(description="picture")
    def thumb(self, creation: Creation) -> str:
        return format_html('<img src="/gallery/{}/thumbnail" width="64" height="64" alt="">', creation.public_id)

    @admin.display(description="size", ordering="bytes")
    def size_of(self, creation: Creation) -> str:
        return _megabytes(creation.bytes)

    @admin.display(description="the owner's storage", ordering="owner_total")
    def owner_storage(self, creation: Creation) -> str:
        return _megabytes(getattr(creation, "owner_total", None))

    @admin.action(description="Remove the selected creations (and their files)", permissions=["delete"])
    def remove(self, request: HttpRequest, queryset: QuerySet[Creation]) -> None:
        count = 0
        for creation in queryset:
            keeping.delete(creation)
            count += 1
        self.message_user(request, f"Removed {count} creation(s) and their files.", messages.SUCCESS)
