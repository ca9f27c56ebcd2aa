"""Admin for API keys (created here, the secret shown once; revoked here) and issued tokens."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from realtime_site.accounts.keys import create_api_key
from realtime_site.accounts.models import ApiKey, IssuedToken, UserLimits
from realtime_site.accounts.revocation import revoke_keys, revoke_tokens


class CheckedSelection(admin.ModelAdmin):
    """Actions refuse a tampered selection by name: Django's own filter would raise (a 500)."""

    def response_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        pk = self.model._meta.pk
        bad = []
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
            try:
                pk.to_python(value)
            except ValidationError:
                bad.append(value)
        if not bad:
            return super().response_action(request, queryset)
        shown = ", ".join(repr(value[:40]) for value in bad[:5]) + (" ..." if len(bad) > 5 else "")
        name = self.model._meta.verbose_name
        self.message_user(request, f"Not {name} ids: {shown}; nothing was done.", messages.ERROR)
        return HttpResponseRedirect(request.get_full_path())


class ApiKeyCreationForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("user", "name")


@admin.register(ApiKey)
class ApiKeyAdmin(CheckedSelection):
    list_display = ("key_id", "user", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at", "created_at")
    search_fields = ("key_id", "user__username", "name")
    readonly_fields = ("key_id", "secret_hash", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke",)

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreationForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ("user", "name") if obj is None else ("user", "name", *self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, secret = create_api_key(obj.user, obj.name)
        obj.pk, obj.key_id, obj.secret_hash, obj.created_at = key.pk, key.key_id, key.secret_hash, key.created_at
        messages.warning(request, f"The new key, shown this once (only a hash is kept): {secret}")

    @admin.action(description="Revoke the selected keys and their tokens, and close their connections")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = revoke_keys(queryset)
        self.message_user(
            request, f"Revoked {count} key(s) and the tokens they issued; their live connections were closed."
        )


@admin.register(IssuedToken)
class IssuedTokenAdmin(CheckedSelection):
    list_display = ("jti", "user", "source", "apps", "issued_at", "expires_at", "revoked_at")
    list_filter = ("source", "issued_at", "revoked_at")
    search_fields = ("jti", "user__username")
    readonly_fields = ("jti", "user", "apps", "source", "api_key", "issued_at", "expires_at", "revoked_at")
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens come from the token endpoints

    @admin.action(description="Revoke the selected tokens and close their connections")
    def revoke(self, request: HttpRequest, queryset: QuerySet[IssuedToken]) -> None:
        count = revoke_tokens(queryset)
        self.message_user(request, f"Revoked {count} token(s); their live connections were closed.")


@admin.register(UserLimits)
class UserLimitsAdmin(admin.ModelAdmin):
    list_display = ("user", "max_connections", "frames_per_minute", "daily_frame_quota", "allowed_apps")
    search_fields = ("user__username",)
