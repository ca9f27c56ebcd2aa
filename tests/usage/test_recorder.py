"""The usage recorder: batched writes, only what changed, closes, and retries when the database fails."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from realtime_site.usage import recorder as recorder_module
from realtime_site.usage.models import ConnectionRecord
from realtime_site.usage.recorder import Usage, UsageRecorder

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def user():
    return get_user_model().objects.create_user("erin", password="pw-erin-12345")


def usage_for(user, **fields) -> Usage:
    return Usage(user_id=user.pk, app="local/echo", auth_method="api_key", **fields)


async def test_open_counts_are_flushed_and_close_writes_the_final_record(user) -> None:
    rec = UsageRecorder()
    usage = usage_for(user, client_address="127.0.0.1", user_agent="ua")
    rec.open(usage)
    usage.frames_in, usage.results_out, usage.bytes_in = 3, 2, 300
    usage.errors["RATE_LIMITED"] += 1
    await rec.flush()
    row = await ConnectionRecord.objects.aget(pk=usage.id)
    assert (row.frames_in, row.results_out, row.errors, row.ended_at) == (3, 2, {"RATE_LIMITED": 1}, None)
    usage.frames_in, usage.inference_seconds = 4, 0.25
    await rec.close(usage, 1000)
    row = await ConnectionRecord.objects.aget(pk=usage.id)
    assert (row.frames_in, row.inference_seconds, row.close_code) == (4, 0.25, 1000) and row.ended_at is not None
    assert rec.live() == []


async def test_unchanged_records_are_not_rewritten(user, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = UsageRecorder()
    a, b = usage_for(user), usage_for(user)
    rec.open(a)
    rec.open(b)
    await rec.flush()
    calls: list[tuple[int, int]] = []
    real = recorder_module.write_records

    def spy(new, changed, minutes=()):
        calls.append((len(new), len(changed)))
        real(new, changed, minutes)

    monkeypatch.setattr(recorder_module, "write_records", spy)
    a.frames_in += 1
    await rec.flush()
    await rec.flush()
    assert calls == [(0, 1)]  # only the changed one, and nothing when nothing changed


async def test_a_failed_write_is_kept_and_retried(user, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = UsageRecorder()
    usage = usage_for(user)
    rec.open(usage)
    usage.frames_in = 7
    real = recorder_module.write_records
    failures = [RuntimeError("database is away")]

    def flaky(new, changed, minutes=()):
        if failures:
            raise failures.pop()
        real(new, changed, minutes)

    monkeypatch.setattr(recorder_module, "write_records", flaky)
    await rec.close(usage, 1000)  # returns: the record waits in the backlog
    assert await ConnectionRecord.objects.acount() == 0
    await rec.drain()
    row = await ConnectionRecord.objects.aget(pk=usage.id)
    assert row.frames_in == 7 and row.close_code == 1000 and rec.lost == 0


async def test_backlog_is_bounded_and_counts_what_it_drops(user, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "BACKLOG_LIMIT", 2)

    def down(new, changed, minutes=()):
        raise RuntimeError("database is away")

    monkeypatch.setattr(recorder_module, "write_records", down)
    rec = UsageRecorder()
    for _ in range(3):
        usage = usage_for(user)
        rec.open(usage)
        await rec.close(usage, 1000)
    assert rec.lost == 1 and len(rec._backlog) == 2
