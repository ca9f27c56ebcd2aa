"""Admin for usage: every connection (read-only), and a per-user summary with editable limits.

Records name their user by id and username snapshot (no foreign key): a record whose user, key or
token was deleted is listed, searched and filtered like any other.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, FloatField, IntegerField, Max, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest

from realtime_site.accounts.models import UserLimits
from realtime_site.gateway.actions import close_user_connections
from realtime_site.usage.metrics import percentile_from_buckets
from realtime_site.usage.models import ConnectionRecord, UserUsage


@admin.register(ConnectionRecord)
class ConnectionRecordAdmin(admin.ModelAdmin):
    list_display = (
        "started_at", "who", "app", "mode", "auth_method", "live", "frames_in", "results_out", "error_count",
        "frames_dropped", "inference_seconds", "p50_ms", "close_code", "client_address",
    )  # fmt: skip
    list_filter = ("app", "mode", "auth_method", "started_at", "close_code", "username")
    search_fields = ("username", "app", "client_address", "user_agent", "token_id", "key_id")
    date_hierarchy = "started_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(ordering="username", description="user")
    def who(self, obj: ConnectionRecord) -> str:
        return obj.username or f"user #{obj.user_id}"

    @admin.display(boolean=True, description="open")
    def live(self, obj: ConnectionRecord) -> bool:
        return obj.ended_at is None

    @admin.display(description="p50 latency (ms)")
    def p50_ms(self, obj: ConnectionRecord) -> str:
        value = percentile_from_buckets(obj.latency_buckets or [], 0.5)
        return "-" if value is None else f"<={value:g}"


def _per_user(aggregate, output_field, default=None, **filters) -> Subquery | Coalesce:
    """One aggregate of the user's records, as a subquery (records hold a user id, not a foreign key)."""
    rows = ConnectionRecord.objects.filter(user_id=OuterRef("pk"), **filters).order_by().values("user_id")
    value = Subquery(rows.annotate(value=aggregate).values("value")[:1], output_field=output_field)
    return value if default is None else Coalesce(value, default, output_field=output_field)


def summary_annotations() -> dict[str, Subquery | Coalesce]:
    number, real = IntegerField(), FloatField()
    return {
        "n_connections": _per_user(Count("id"), number, Value(0)),
        "n_open": _per_user(Count("id"), number, Value(0), ended_at__isnull=True),
        "n_frames": _per_user(Sum("frames_in"), number, Value(0)),
        "n_results": _per_user(Sum("results_out"), number, Value(0)),
        "seconds": _per_user(Sum("inference_seconds"), real, Value(0.0)),
        "seen": _per_user(Max("started_at"), ConnectionRecord._meta.get_field("started_at")),
    }


class UserLimitsInline(admin.StackedInline):
    model = UserLimits
    can_delete = False
    fields = ("max_connections", "frames_per_minute", "daily_frame_quota", "allowed_apps")
    verbose_name_plural = "limits (empty: the site default)"


@admin.register(UserUsage)
class UserUsageAdmin(admin.ModelAdmin):
    list_display = ("username", "connections", "open_now", "frames", "results", "errors", "inference", "last_seen")
    search_fields = ("username", "email")
    fields = ("username", "email", "is_active")
    readonly_fields = ("username", "email")
    inlines = (UserLimitsInline,)
    actions = ("disconnect",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(**summary_annotations())

    @admin.display(ordering="n_connections")
    def connections(self, obj) -> int:
        return obj.n_connections

    @admin.display(ordering="n_open", description="open now")
    def open_now(self, obj) -> int:
        return obj.n_open

    @admin.display(ordering="n_frames")
    def frames(self, obj) -> int:
        return obj.n_frames or 0

    @admin.display(ordering="n_results")
    def results(self, obj) -> int:
        return obj.n_results or 0

    @admin.display(description="errors")
    def errors(self, obj) -> int:
        rows = ConnectionRecord.objects.filter(user_id=obj.pk).values_list("errors", flat=True)
        return sum(sum(e.values()) for e in rows if e)

    @admin.display(ordering="seconds", description="inference (s)")
    def inference(self, obj) -> str:
        return f"{obj.seconds or 0:.1f}"

    @admin.display(ordering="seen", description="last seen")
    def last_seen(self, obj):
        return obj.seen

    @admin.action(description="Disconnect the selected users' live sessions (every gateway)")
    def disconnect(self, request: HttpRequest, queryset: QuerySet) -> None:
        users = list(queryset.values_list("pk", flat=True))
        for user_id in users:
            close_user_connections(user_id)
        self.message_user(request, f"Closed the live sessions of {len(users)} user(s).")
