"""URL routes of the gateway site."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from realtime_site.accounts import views as accounts
from realtime_site.gallery import views as gallery
from realtime_site.gateway import http_views, proxy
from realtime_site.gateway import views as gateway
from realtime_site.rooms import views as rooms
from realtime_site.staff import dashboard
from realtime_site.staff import views as staff

_APP = r"(?!(?:admin|accounts|api|gallery|rooms|static|tokens|metrics)/)(?P<owner>[^/]+)/(?P<alias>[^/]+)"

urlpatterns = [
    path("", gateway.draw, name="home"),
    path("api/apps", gateway.apps, name="apps"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tokens/", accounts.tokens, name="tokens"),
    path("api/fal/token", accounts.fal_token, name="fal-token"),
    path("api/fal/proxy", proxy.fal_proxy, name="fal-proxy"),
    path("metrics", staff.metrics, name="metrics"),
    path("admin/dashboard/", admin.site.admin_view(dashboard.dashboard), name="usage-dashboard"),
    path("admin/dashboard/data", admin.site.admin_view(dashboard.dashboard_data), name="usage-dashboard-data"),
    path("admin/dashboard/export.csv", admin.site.admin_view(dashboard.export_csv), name="usage-export"),
    path("admin/runners/", admin.site.admin_view(dashboard.runners), name="runners"),
    path("admin/", admin.site.urls),
    path("gallery/", gallery.gallery, name="gallery"),
    path("gallery/keep", gallery.keep, name="gallery-keep"),
    path("gallery/timelapse", gallery.timelapse, name="gallery-timelapse"),
    path("gallery/<slug:public_id>/", gallery.creation_page, name="creation"),
    path("gallery/<slug:public_id>/remix", gallery.remix, name="creation-remix"),
    path("gallery/<slug:public_id>/share", gallery.share, name="creation-share"),
    path("gallery/<slug:public_id>/delete", gallery.delete, name="creation-delete"),
    path("gallery/<slug:public_id>/<slug:what>", gallery.creation_file, name="creation-file"),
    path("rooms/", rooms.create, name="room-create"),
    path("rooms/<slug:slug>/", rooms.room_page, name="room"),
    path("rooms/<slug:slug>/manage", rooms.manage, name="room-manage"),
    # The HTTP forms of the apps, last: /{owner}/{alias}/stream and /{owner}/{alias}, for any owner but
    # this site's own first segments (so /accounts/login still redirects to its slash).
    re_path(rf"^{_APP}/stream$", http_views.stream, name="app-stream"),
    re_path(rf"^{_APP}$", http_views.run, name="app-run"),
]
