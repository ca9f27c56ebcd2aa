from django.contrib import admin

from realtime_site.accounts.models import ApiKey, IssuedToken, UserLimits


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("key_id", "user", "name", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("key_id", "secret_hash", "created_at", "last_used_at")
    search_fields = ("key_id", "user__username", "name")


@admin.register(IssuedToken)
class IssuedTokenAdmin(admin.ModelAdmin):
    list_display = ("jti", "user", "source", "issued_at", "expires_at", "revoked_at")
    readonly_fields = ("jti", "user", "apps", "source", "api_key", "issued_at", "expires_at")
    search_fields = ("jti", "user__username")


@admin.register(UserLimits)
class UserLimitsAdmin(admin.ModelAdmin):
    list_display = ("user", "max_connections", "frames_per_minute", "daily_frame_quota")
