"""The database side of usage recording: one write round, run in the database thread.

A round is first written in one transaction (the common case, and the cheapest). When that fails,
every row is written again on its own, each in its own transaction, so that one bad row never
blocks the others. Each row then gets an ``Outcome``:

- ``WRITTEN``;
- ``BAD``: the database refused the row's data (``IntegrityError``, ``DataError``, ``ValueError``...);
  the recorder sets it aside;
- ``AWAY``: the row failed otherwise and the database does not answer a ``SELECT 1`` either; this
  row and the ones not tried yet are kept for the next round (nothing more is tried: a database
  that is away would make every row wait for its own failure);
- ``RETRY``: the row failed otherwise (a lock, say) while the database answers; tried again next
  round (the recorder sets a row aside after a few such rounds).

Writes are upserts: a row the previous rounds may or may not have inserted is updated, or
inserted when missing.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.db import DatabaseError, DataError, IntegrityError, connection, transaction

from realtime_site.accounts.models import ApiKey
from realtime_site.usage.models import ERROR_KEY_LENGTH, AppMinute, ConnectionRecord, fit_int, fit_text

__all__ = ["Outcome", "RoundResult", "describe", "write_records", "write_round"]

# Columns that change after a record is created.
MUTABLE = (
    "runner",
    "ended_at",
    "close_code",
    "frames_in",
    "results_out",
    "errors",
    "frames_dropped",
    "bytes_in",
    "bytes_out",
    "inference_seconds",
    "latency_buckets",
)
# Errors that say "this row's data", not "this database".
DATA_ERRORS: tuple[type[BaseException], ...] = (IntegrityError, DataError, ValueError, TypeError, ArithmeticError)


class Outcome(enum.Enum):
    WRITTEN = "written"
    BAD = "bad"
    AWAY = "away"
    RETRY = "retry"


@dataclass
class RoundResult:
    rows: dict[uuid.UUID, tuple[Outcome, str]] = field(default_factory=dict)
    minutes: list[tuple[Outcome, str]] = field(default_factory=list)  # in the order given
    one_by_one: bool = False  # the single transaction failed


class MissingRows(Exception):
    """An update found fewer rows than it was given (someone deleted records)."""


def describe(exc: BaseException) -> str:
    """The error's type and first line: PostgreSQL's DETAIL lines may quote the whole row."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def fill_identities(rows: list[ConnectionRecord]) -> None:
    """Copy the username and the key's public id into rows that lack them (while those rows exist)."""
    users = {r.user_id for r in rows if not r.username}
    if users:
        names = dict(get_user_model().objects.filter(pk__in=users).values_list("pk", "username"))
        for row in rows:
            if not row.username:
                row.username = fit_text(names.get(row.user_id, ""), ConnectionRecord.max_length("username"))
    keys = {r.api_key_id for r in rows if r.api_key_id is not None and not r.key_id}
    if keys:
        key_ids = dict(ApiKey.objects.filter(pk__in=keys).values_list("pk", "key_id"))
        for row in rows:
            if row.api_key_id is not None and not row.key_id:
                row.key_id = fit_text(key_ids.get(row.api_key_id, ""), ConnectionRecord.max_length("key_id"))


def _update(rows: list[ConnectionRecord]) -> int:
    """Update the mutable columns of ``rows`` with one ``executemany``; returns the rows matched.

    (The ORM's ``bulk_update`` builds a CASE per column: 70-100 ms of held interpreter lock for 100
    rows here, stalling every connection's frames.)
    """
    meta = ConnectionRecord._meta
    fields = [meta.get_field(name) for name in MUTABLE]
    columns = ", ".join(f"{connection.ops.quote_name(f.column)} = %s" for f in fields)
    pk = meta.pk
    table, key = connection.ops.quote_name(meta.db_table), connection.ops.quote_name(pk.column)
    params = [
        [f.get_db_prep_value(getattr(row, f.attname), connection) for f in fields]
        + [pk.get_db_prep_value(row.pk, connection)]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {table} SET {columns} WHERE {key} = %s", params)
        return cursor.rowcount


def _write_minute(minute: dict[str, Any]) -> None:
    key = {
        "app": fit_text(minute["app"], AppMinute._meta.get_field("app").max_length),
        "minute": minute["minute"],
        "gateway": fit_text(minute["gateway"], AppMinute._meta.get_field("gateway").max_length),
    }
    values = {
        "frames_in": fit_int(minute["frames_in"]),
        "results_out": fit_int(minute["results_out"]),
        "errors": {fit_text(k, ERROR_KEY_LENGTH): fit_int(v) for k, v in minute["errors"].items()},
        "latency_buckets": [fit_int(n) for n in minute["latency_buckets"]],
    }
    AppMinute.objects.update_or_create(**key, defaults=values)


def write_records(
    new: list[ConnectionRecord], changed: list[ConnectionRecord], minutes: list[dict[str, Any]] = ()
) -> None:
    """Insert ``new``, update ``changed`` and the minute rollups, all in one transaction."""
    with transaction.atomic():
        for minute in minutes:
            _write_minute(minute)
        if new:
            fill_identities(new)
            ConnectionRecord.objects.bulk_create(new)
        if changed and _update(changed) < len(changed):
            raise MissingRows(f"{len(changed)} records to update, fewer found")


def _write_one(row: ConnectionRecord) -> None:
    with transaction.atomic():
        if _update([row]) == 0:
            fill_identities([row])
            ConnectionRecord.objects.bulk_create([row])


def database_answers() -> bool:
    """A fresh connection that runs ``SELECT 1``."""
    try:
        if not connection.in_atomic_block:
            connection.close()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return False
    return True


def _one_by_one(items: list[Any], write: Any) -> list[tuple[Outcome, str]]:
    outcomes: list[tuple[Outcome, str]] = []
    for index, item in enumerate(items):
        try:
            write(item)
        except DATA_ERRORS as exc:
            outcomes.append((Outcome.BAD, describe(exc)))
        except Exception as exc:
            error = describe(exc)
            if not database_answers():
                return outcomes + [(Outcome.AWAY, error)] * (len(items) - index)
            outcomes.append((Outcome.RETRY, error))
        else:
            outcomes.append((Outcome.WRITTEN, ""))
    return outcomes


def write_round(
    new: list[ConnectionRecord], changed: list[ConnectionRecord], minutes: list[dict[str, Any]] = ()
) -> RoundResult:
    """Write a round: in one transaction, else row by row; says what became of each row."""
    rows = [*new, *changed]
    try:
        write_records(new, changed, minutes)
    except Exception as first:
        error = describe(first)
    else:
        return RoundResult({r.id: (Outcome.WRITTEN, "") for r in rows}, [(Outcome.WRITTEN, "")] * len(minutes))
    if not database_answers():
        away = (Outcome.AWAY, error)
        return RoundResult({r.id: away for r in rows}, [away] * len(minutes), one_by_one=True)
    outcomes = _one_by_one(rows, _write_one)
    if outcomes and outcomes[-1][0] is Outcome.AWAY:  # it went away meanwhile: keep the minutes too
        minute_outcomes = [(Outcome.AWAY, outcomes[-1][1])] * len(minutes)
    else:
        minute_outcomes = _one_by_one(list(minutes), _write_minute)
    return RoundResult(
        {row.id: outcome for row, outcome in zip(rows, outcomes, strict=True)}, minute_outcomes, one_by_one=True
    )
