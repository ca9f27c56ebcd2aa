"""The usage recorder on the real test database: batched writes, only what changed, closes; one bad
record never blocks the others; rows whose user, key or token is deleted mid-flight; the database
away and back; a bounded drain.

"The database is away" is Django's own query hook (``connection.execute_wrappers``) on the recorder's
connection: every statement fails with ``OperationalError``, the ``SELECT 1`` probe included.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection
from django.utils import timezone

from realtime_site.accounts.keys import create_api_key
from realtime_site.accounts.models import ApiKey, IssuedToken
from realtime_site.accounts.tokens import issue_token
from realtime_site.usage import recorder as recorder_module
from realtime_site.usage import writer as writer_module
from realtime_site.usage.metrics import REGISTRY
from realtime_site.usage.models import AppMinute, ConnectionRecord
from realtime_site.usage.recorder import Usage, UsageRecorder

pytestmark = pytest.mark.django_db(transaction=True)


class DatabaseFault:
    """Fails the recorder's statements: all of them while ``away``, or those naming one value."""

    def __init__(self) -> None:
        self.away = False
        self.poison: set[str] = set()  # statements with one of these parameters fail as a held lock would
        self.hold: threading.Event | None = None  # statements wait for it (a database that hangs)
        self.installed_on: list = []

    def __call__(self, execute, sql, params, many, context):
        if self.hold is not None:
            self.hold.wait(60)
        if self.away:
            raise OperationalError("connection refused (the test's database is away)")
        flat = [p for row in params for p in row] if many else list(params or ())
        if self.poison and any(str(p) in self.poison for p in flat):
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    async def install(self) -> DatabaseFault:
        """On the test task's connection; call before any recorder starts: its writer task shares it."""

        def install() -> None:
            connection.execute_wrappers.append(self)
            self.installed_on.append(connection.execute_wrappers)

        await database_sync_to_async(install)()
        return self


@pytest.fixture
def fault():
    fault = DatabaseFault()
    yield fault
    fault.away, fault.poison, fault.hold = False, set(), None
    for wrappers in fault.installed_on:
        wrappers.remove(fault)


@pytest.fixture
def user():
    return get_user_model().objects.create_user("erin", password="pw-erin-12345")


def usage_for(user, **fields) -> Usage:
    return Usage(user_id=user.pk, app="local/echo", auth_method="api_key", **fields)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def close_together(rec: UsageRecorder, *usages: Usage) -> None:
    """Closes that arrive together share one write round."""
    await asyncio.gather(*(rec.close(u, 1000) for u in usages))


async def test_record_is_flushed_while_open_and_final_at_close(user, fault) -> None:
    await fault.install()
    rec = UsageRecorder()
    usage = usage_for(user, client_address="127.0.0.1", user_agent="ua")
    rec.open(usage)
    usage.frames_in, usage.results_out, usage.bytes_in = 3, 2, 300
    usage.errors["RATE_LIMITED"] += 1
    await rec.flush()
    row = await ConnectionRecord.objects.aget(pk=usage.id)
    assert (row.frames_in, row.results_out, row.errors, row.ended_at) == (3, 2, {"RATE_LIMITED": 1}, None)
    assert (row.user_id, row.username) == (user.pk, "erin")  # the snapshot, copied at the first write
    usage.frames_in, usage.inference_seconds = 4, 0.25
    await rec.close(usage, 1000)
    row = await ConnectionRecord.objects.aget(pk=usage.id)
    assert (row.frames_in, row.inference_seconds, row.close_code) == (4, 0.25, 1000) and row.ended_at is not None
    assert rec.live() == [] and rec.unwritten() == 0


async def test_records_unchanged_are_not_rewritten(user, fault, monkeypatch: pytest.MonkeyPatch) -> None:
    await fault.install()
    rec = UsageRecorder()
    a, b = usage_for(user), usage_for(user)
    rec.open(a)
    rec.open(b)
    await rec.flush()
    calls: list[tuple[int, int]] = []
    real = writer_module.write_records

    def spy(new, changed, minutes=()):
        calls.append((len(new), len(changed)))
        real(new, changed, minutes)

    monkeypatch.setattr(writer_module, "write_records", spy)
    a.frames_in += 1
    await rec.flush()
    await rec.flush()
    assert calls == [(0, 1)]  # only the changed one, and nothing when nothing changed


async def test_records_bad_one_is_set_aside_and_the_others_written(user, fault, caplog) -> None:
    await fault.install()
    rec = UsageRecorder()
    good, bad, other = usage_for(user, frames_in=5), usage_for(user, frames_in=6), usage_for(user, frames_in=7)
    bad.user_id = 2**64  # no database column takes it
    for usage in (good, bad, other):
        rec.open(usage)
    failed = sample("realtime_usage_records_failed_total", kind="connection")
    with caplog.at_level(logging.ERROR, logger="realtime_site.usage"):
        await close_together(rec, good, bad, other)
        later = usage_for(user, frames_in=8)  # the next round is not blocked either
        rec.open(later)
        await rec.close(later, 1000)
        await rec.close(bad, 1000)  # a second close of the bad one: not tried, not logged again
    rows = {r.id: r.frames_in async for r in ConnectionRecord.objects.all()}
    assert rows == {good.id: 5, other.id: 7, later.id: 8}
    assert [u.id for u, _ in rec.set_aside] == [bad.id] and "Overflow" in rec.set_aside[0][1]
    assert sample("realtime_usage_records_failed_total", kind="connection") == failed + 1
    logged = [r.getMessage() for r in caplog.records if str(bad.id) in r.getMessage()]
    assert len(logged) == 1 and "set aside" in logged[0]
    assert rec.backlog() == 0 and rec.unwritten() == 0


async def test_records_over_column_sizes_are_cut_to_fit(user, fault) -> None:
    await fault.install()
    rec = UsageRecorder()
    usage = usage_for(user, user_agent="=evil\x00" + "u" * 400, client_address="a" * 150)
    usage.app = "o/" + "x" * 199  # 201 characters: PostgreSQL's varchar(200) refused it
    usage.errors["\x00" + "E" * 100] += 1
    usage.frames_in, usage.inference_seconds = 2**70, float("nan")
    rec.open(usage)
    await rec.close(usage, 1000)
    row = await ConnectionRecord.objects.aget(pk=usage.id)
    assert (len(row.app), len(row.user_agent), len(row.client_address)) == (200, 300, 100)
    assert "\x00" not in row.user_agent and row.user_agent.startswith("=evilu")
    assert list(row.errors) == ["E" * 64] and row.frames_in == 2**63 - 1 and row.inference_seconds == 0.0
    assert await AppMinute.objects.filter(app="o/" + "x" * 198).aexists()
    assert list(rec.set_aside) == []


async def test_records_outlive_their_user_key_and_token(user, fault) -> None:
    await fault.install()
    key, _ = await database_sync_to_async(create_api_key)(user)
    await database_sync_to_async(issue_token)(user, ["echo"], 60)
    token = await IssuedToken.objects.aget()
    key_pk, jti = key.pk, token.jti  # a deleted instance forgets its pk
    rec = UsageRecorder()
    seen = usage_for(user, api_key_id=key.pk, token_id=token.jti)
    rec.open(seen)
    seen.frames_in = 3
    await rec.flush()  # inserted while all three exist
    unseen = usage_for(user, api_key_id=key.pk, token_id=token.jti, username="erin", key_id=key.key_id)
    rec.open(unseen)  # not written before the deletes
    await token.adelete()
    await ApiKey.objects.filter(pk=key.pk).adelete()
    await get_user_model().objects.filter(pk=user.pk).adelete()
    assert not await get_user_model().objects.filter(pk=user.pk).aexists()
    seen.frames_in, unseen.frames_in = 9, 4
    await close_together(rec, seen, unseen)
    rows = {r.id: r async for r in ConnectionRecord.objects.all()}
    assert {rows[u.id].frames_in for u in (seen, unseen)} == {9, 4}
    for usage in (seen, unseen):
        row = rows[usage.id]
        assert (row.user_id, row.username, row.api_key_id, row.key_id, row.token_id) == (
            user.pk, "erin", key_pk, key.key_id, jti,
        )  # fmt: skip
        assert row.ended_at is not None
    assert list(rec.set_aside) == [] and rec.backlog() == 0


async def test_records_wait_while_the_database_is_away_then_are_written(user, fault) -> None:
    await fault.install()
    rec = UsageRecorder()
    closed, still_open = usage_for(user, frames_in=2), usage_for(user)
    rec.open(closed)
    rec.open(still_open)
    await rec.flush()
    fault.away = True
    closed.frames_in, still_open.frames_in = 5, 6
    await rec.close(closed, 1000)  # returns: the record waits in the backlog
    await rec.flush()
    assert rec.backlog() == 1 and sample("realtime_usage_backlog_records") == 1
    assert list(rec.set_aside) == [] and rec.lost == 0
    fault.away = False
    assert await rec.drain(timeout=60) == 0
    rows = {r.id: (r.frames_in, r.close_code) async for r in ConnectionRecord.objects.all()}
    assert rows == {closed.id: (5, 1000), still_open.id: (6, None)}
    assert rec.backlog() == 0 and sample("realtime_usage_backlog_records") == 0


async def test_records_failing_while_the_database_answers_are_retried_then_set_aside(user, fault, settings) -> None:
    await fault.install()
    settings.USAGE_FLUSH_INTERVAL = 3600  # rounds only when the test asks
    rec = UsageRecorder()
    stuck = usage_for(user)
    fault.poison = {stuck.id.hex, str(stuck.id)}  # its statements fail as a held lock would; the others pass
    rec.open(stuck)
    others = []
    for n in range(recorder_module.MAX_RETRIES):
        usage = usage_for(user, frames_in=n + 1)
        others.append(usage)
        rec.open(usage)
        await rec.flush()  # the stuck one is tried again each time
        assert await ConnectionRecord.objects.filter(pk=usage.id).aexists()  # never blocked
        assert bool(rec.set_aside) == (n == recorder_module.MAX_RETRIES - 1)  # kept until the last try
    assert [u.id for u, _ in rec.set_aside] == [stuck.id] and "locked" in rec.set_aside[0][1]
    assert await ConnectionRecord.objects.acount() == len(others)


async def test_drain_is_bounded_while_the_database_is_away(user, fault, caplog) -> None:
    await fault.install()
    rec = UsageRecorder()
    usages = [usage_for(user) for _ in range(3)]
    for usage in usages:
        rec.open(usage)
    fault.away = True
    await close_together(rec, *usages)
    with caplog.at_level(logging.ERROR, logger="realtime_site.usage"):
        assert await rec.drain(timeout=1) == 3
    assert any("3 usage records could not be written" in r.getMessage() for r in caplog.records)
    fault.away = False
    assert await rec.drain(timeout=60) == 0 and await ConnectionRecord.objects.acount() == 3


async def test_drain_is_bounded_while_the_database_hangs(user, fault, settings) -> None:
    await fault.install()
    settings.USAGE_DRAIN_TIMEOUT = 1  # close() waits no longer either
    rec = UsageRecorder()
    usage = usage_for(user, frames_in=1)
    rec.open(usage)
    fault.hold = threading.Event()
    try:
        await rec.close(usage, 1000)  # the write hangs in the database thread; close returns
        assert await rec.drain(timeout=1) == 1
    finally:
        fault.hold.set()
    fault.hold = None
    assert await rec.drain(timeout=60) == 0
    assert (await ConnectionRecord.objects.aget(pk=usage.id)).close_code == 1000


async def test_backlog_is_bounded_and_counts_what_it_drops(user, fault, monkeypatch, caplog) -> None:
    await fault.install()
    monkeypatch.setattr(recorder_module, "BACKLOG_LIMIT", 2)
    fault.away = True
    rec = UsageRecorder()
    lost = sample("realtime_usage_records_lost_total")
    first = usage_for(user, started_at=timezone.now() - timedelta(seconds=5))
    with caplog.at_level(logging.ERROR, logger="realtime_site.usage"):
        for usage in (first, usage_for(user), usage_for(user)):
            rec.open(usage)
            await rec.close(usage, 1000)
    assert rec.lost == 1 and rec.backlog() == 2
    assert sample("realtime_usage_records_lost_total") == lost + 1
    assert any(f"dropped the record of connection {first.id}" in r.getMessage() for r in caplog.records)
