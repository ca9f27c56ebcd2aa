"""The staff dashboard inside the admin: plots, top users, a date range, CSV export, runners.

The page gets the minutes of the chosen range as JSON; while the range ends now, it follows every
gateway process live over ``/admin/live`` (the channel layer: all processes with Redis).
"""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.contrib import admin
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from realtime_site.gateway.runners import RunnerState
from realtime_site.usage.metrics import LATENCY_BUCKETS_MS
from realtime_site.usage.models import AppMinute, ConnectionRecord

__all__ = ["dashboard", "dashboard_data", "export_csv", "runners"]

DEFAULT_RANGE = timedelta(hours=1)
CSV_COLUMNS = (
    "id", "user__username", "app", "auth_method", "api_key__key_id", "token_id", "gateway", "runner", "started_at",
    "ended_at", "close_code", "frames_in", "results_out", "errors", "frames_dropped", "bytes_in", "bytes_out",
    "inference_seconds", "client_address", "user_agent",
)  # fmt: skip


class BadRange(ValueError):
    pass


def date_range(request: HttpRequest) -> tuple[datetime, datetime]:
    """``?start=&end=`` (ISO 8601); default the last hour. Raises BadRange naming the problem."""
    now = timezone.now()
    values = []
    for name, default in (("start", now - DEFAULT_RANGE), ("end", now)):
        raw = request.GET.get(name)
        if not raw:
            values.append(default)
            continue
        parsed = parse_datetime(raw)
        if parsed is None:
            raise BadRange(f"{name}: {raw[:40]!r} is not a date and time (ISO 8601)")
        values.append(timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed)
    start, end = values
    if start >= end:
        raise BadRange("start must be before end")
    return start, end


def _data(start: datetime, end: datetime) -> dict[str, Any]:
    minutes = [
        {**row, "minute": row["minute"].isoformat()}
        for row in AppMinute.objects.filter(minute__gte=start, minute__lt=end).values(
            "app", "minute", "gateway", "frames_in", "results_out", "errors", "latency_buckets"
        )
    ]
    in_range = ConnectionRecord.objects.filter(started_at__lt=end).exclude(ended_at__lt=start)
    top = (
        in_range.values("user__username")
        .annotate(
            connections=Count("id"),
            frames=Sum("frames_in"),
            results=Sum("results_out"),
            seconds=Sum("inference_seconds"),
        )
        .order_by("-frames")[:10]
    )
    active = ConnectionRecord.objects.filter(ended_at__isnull=True).values("app", "gateway").annotate(n=Count("id"))
    by_gateway: dict[str, dict[str, int]] = {}
    for row in active:
        by_gateway.setdefault(row["gateway"], {})[row["app"]] = row["n"]
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "buckets_ms": list(LATENCY_BUCKETS_MS),
        "minutes": minutes,
        "active": by_gateway,
        "top_users": [{**row, "seconds": round(row["seconds"] or 0, 2)} for row in top],
    }


def dashboard(request: HttpRequest) -> HttpResponse:
    try:
        start, end = date_range(request)
    except BadRange as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    live = timezone.now() - end < timedelta(minutes=1)
    context = {**admin.site.each_context(request), "title": "Usage dashboard", "start": start, "end": end, "live": live}
    return render(request, "admin/usage_dashboard.html", context)


def dashboard_data(request: HttpRequest) -> JsonResponse:
    try:
        start, end = date_range(request)
    except BadRange as exc:
        return JsonResponse({"detail": str(exc)}, status=400)
    return JsonResponse(_data(start, end))


def export_csv(request: HttpRequest) -> HttpResponse:
    """Every connection that overlaps the range, one row each."""
    try:
        start, end = date_range(request)
    except BadRange as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")

    class Echo:
        def write(self, value: str) -> str:
            return value

    writer = csv.writer(Echo())
    rows = (
        ConnectionRecord.objects.filter(started_at__lt=end)
        .exclude(ended_at__lt=start)
        .order_by("started_at")
        .values_list(*CSV_COLUMNS)
    )
    lines = (writer.writerow(row) for row in [CSV_COLUMNS, *rows.iterator()])
    response = StreamingHttpResponse(lines, content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="usage-{start:%Y%m%d-%H%M}-{end:%Y%m%d-%H%M}.csv"'
    return response


def runners(request: HttpRequest) -> HttpResponse:
    """Each runner's own /healthz, asked now (a person is looking; nothing here is on a hot path)."""
    states = []
    for url in settings.RUNNER_URLS:
        runner = RunnerState(url)
        try:
            health = httpx.get(runner.health_url, timeout=3).json()
            states.append({"url": url, "healthy": health.get("status") == "ok", "health": health, "error": None})
        except (httpx.HTTPError, ValueError) as exc:
            states.append({"url": url, "healthy": False, "health": {}, "error": f"{type(exc).__name__}: {exc}"})
    context = {**admin.site.each_context(request), "title": "Runners and apps", "runners": states}
    return render(request, "admin/runners.html", context)
