"""The staff dashboard inside the admin: plots, top users, a date range, CSV export, runners.

The page gets the minutes of the chosen range as JSON; while the range ends now, it follows every
gateway process live over ``/admin/live`` (the channel layer: all processes with Redis).

Permissions (superusers have them all; staff without them get 403): the dashboard, its data and the
CSV export show per-user figures taken from the connection records, so all three need
``usage.view_connectionrecord``, the permission that shows the records in the admin; the runners
page needs ``usage.view_runners``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.decorators import permission_required
from django.db.models import Count, Max, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from realtime_site.gateway.runners import RunnerState
from realtime_site.usage.metrics import LATENCY_BUCKETS_MS
from realtime_site.usage.models import AppMinute, ConnectionRecord

__all__ = ["RECORDS_PERMISSION", "RUNNERS_PERMISSION", "dashboard", "dashboard_data", "export_csv", "runners"]

RECORDS_PERMISSION = "usage.view_connectionrecord"
RUNNERS_PERMISSION = "usage.view_runners"
DEFAULT_RANGE = timedelta(hours=1)
CSV_COLUMNS = (
    "id", "user_id", "username", "app", "auth_method", "mode", "api_key_id", "key_id", "token_id", "gateway", "runner",
    "started_at", "ended_at", "close_code", "frames_in", "results_out", "errors", "frames_dropped", "bytes_in",
    "bytes_out", "inference_seconds", "client_address", "user_agent",
)  # fmt: skip
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may read as a formula (OWASP)


class BadRange(ValueError):
    pass


def date_range(request: HttpRequest) -> tuple[datetime, datetime]:
    """``?start=&end=`` (ISO 8601); default the last hour. Raises BadRange naming the problem."""
    now = timezone.now()
    values = []
    for name, default in (("start", now - DEFAULT_RANGE), ("end", now)):
        raw = request.GET.get(name)
        values.append(default if not raw else _parse(name, raw))
    start, end = values
    if start >= end:
        raise BadRange("start must be before end")
    return start, end


def _parse(name: str, raw: str) -> datetime:
    shown = repr(raw[:40]) + ("..." if len(raw) > 40 else "")
    try:
        if len(raw) > 40:  # Python's parser reads 5000 digits as a date, for one
            raise ValueError("too long")
        if not (raw.isascii() and raw.isprintable()):  # and stops at a NUL
            raise ValueError("unexpected characters")
        parsed = parse_datetime(raw)
        if parsed is None:
            raise ValueError("not ISO 8601")
        aware = timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed
        return aware.astimezone(UTC)  # out of range here rather than in the database
    except (ValueError, OverflowError) as exc:
        raise BadRange(
            f"{name}: {shown} is not a valid date and time (ISO 8601, e.g. 2025-01-31T12:00): {exc}"
        ) from None


def _data(start: datetime, end: datetime) -> dict[str, Any]:
    minutes = [
        {**row, "minute": row["minute"].isoformat()}
        for row in AppMinute.objects.filter(minute__gte=start, minute__lt=end).values(
            "app", "minute", "gateway", "frames_in", "results_out", "errors", "latency_buckets"
        )
    ]
    in_range = ConnectionRecord.objects.filter(started_at__lt=end).exclude(ended_at__lt=start)
    top = (
        in_range.values("user_id")
        .annotate(
            name=Max("username"),
            connections=Count("id"),
            frames=Sum("frames_in"),
            results=Sum("results_out"),
            seconds=Sum("inference_seconds"),
        )
        .order_by("-frames", "user_id")[:10]
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
        "top_users": [
            {
                "user_id": row["user_id"],
                "username": row["name"] or f"user #{row['user_id']}",
                "connections": row["connections"],
                "frames": row["frames"],
                "results": row["results"],
                "seconds": round(row["seconds"] or 0, 2),
            }
            for row in top
        ],
    }


@permission_required(RECORDS_PERMISSION, raise_exception=True)
def dashboard(request: HttpRequest) -> HttpResponse:
    try:
        start, end = date_range(request)
    except BadRange as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    live = timezone.now() - end < timedelta(minutes=1)
    context = {**admin.site.each_context(request), "title": "Usage dashboard", "start": start, "end": end, "live": live}
    return render(request, "admin/usage_dashboard.html", context)


@permission_required(RECORDS_PERMISSION, raise_exception=True)
def dashboard_data(request: HttpRequest) -> JsonResponse:
    try:
        start, end = date_range(request)
    except BadRange as exc:
        return JsonResponse({"detail": str(exc)}, status=400)
    return JsonResponse(_data(start, end))


def csv_cell(value: Any) -> Any:
    """A cell no spreadsheet runs: text that could start a formula gets a leading ``'``; JSON as JSON."""
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


@permission_required(RECORDS_PERMISSION, raise_exception=True)
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

    def lines() -> Iterator[str]:
        yield writer.writerow(CSV_COLUMNS)
        for row in rows.iterator():
            yield writer.writerow([csv_cell(value) for value in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="usage-{start:%Y%m%d-%H%M}-{end:%Y%m%d-%H%M}.csv"'
    return response


@permission_required(RUNNERS_PERMISSION, raise_exception=True)
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
