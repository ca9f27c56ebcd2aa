"""Admin for usage: every connection (read-only), and a per-user summary with editable limits."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.http import HttpRequest

from realtime_site.accounts.models import UserLimits
from realtime_site.gateway.actions import close_user_connections
from realtime_site.usage.metrics import percentile_from_buckets
from realtime_site.usage.models import ConnectionRecord, UserUsage


@admin.register(ConnectionRecord)
class ConnectionRecordAdmin(admin.ModelAdmin):
    list_display = (
        "started_at", "user", "app", "auth_method", "live", "frames_in", "results_out", "error_count",
        "frames_dropped", "inference_seconds", "p50_ms", "close_code", "client_address",
    )  # fmt: skip
    list_filter = ("app", "auth_method", "started_at", "close_code", ("user", admin.RelatedOnlyFieldListFilter))
    search_fields = ("user__username", "app", "client_address", "user_agent", "token__jti", "api_key__key_id")
    date_hierarchy = "started_at"
    list_select_related = ("user",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(boolean=True, description="open")
    def live(self, obj: ConnectionRecord) -> bool:
        return obj.ended_at is None

    @admin.display(description="p50 latency (ms)")
    def p50_ms(self, obj: ConnectionRecord) -> str:
        value = percentile_from_buckets(obj.latency_buckets or [], 0.5)
        return "-" if value is None else f"<={value:g}"


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
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_connections=Count("realtime_connections"),
                n_open=Count("realtime_connections", filter=Q(realtime_connections__ended_at__isnull=True)),
                n_frames=Sum("realtime_connections__frames_in"),
                n_results=Sum("realtime_connections__results_out"),
                seconds=Sum("realtime_connections__inference_seconds"),
                seen=Max("realtime_connections__started_at"),
            )
        )

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
        rows = ConnectionRecord.objects.filter(user=obj).values_list("errors", flat=True)
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
