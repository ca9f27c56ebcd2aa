"""URL routes of the gateway site."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from realtime_site.accounts import views as accounts
from realtime_site.gateway import views as gateway

urlpatterns = [
    path("", gateway.draw, name="home"),
    path("api/apps", gateway.apps, name="apps"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tokens/", accounts.tokens, name="tokens"),
    path("api/fal/token", accounts.fal_token, name="fal-token"),
    path("api/fal/proxy", accounts.fal_proxy, name="fal-proxy"),
    path("admin/", admin.site.urls),
]
