"""Redis and PostgreSQL at 127.0.0.1 for the benchmarks that use them: a fresh database, versions.

PostgreSQL: user postgres, trust auth, on 5432 (``.ci/run`` and ``make`` start it where it is absent).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

import redis
from common import clean_env

__all__ = ["DATABASE_URL", "REDIS_URL", "backing_versions", "fresh_database", "psql"]

REDIS_URL = "redis://127.0.0.1:6379/9"
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-tAc"]
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/{}"


def psql(sql: str) -> str:
    done = subprocess.run([*PSQL, sql], env=clean_env(), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"psql {sql!r} failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
    return done.stdout.strip()


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database, dropped (connections forced off) at the end."""
    name = f"bench_load_{os.getpid()}_{int(time.time())}"
    psql(f"create database {name}")
    try:
        yield name
    finally:
        try:
            psql(f"drop database if exists {name} with (force)")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"could not drop database {name}: {exc}", flush=True)


def backing_versions() -> dict[str, str]:
    """Redis and PostgreSQL versions; raises when either is not there."""
    try:
        redis_version = str(redis.Redis.from_url(REDIS_URL, socket_timeout=5).info("server")["redis_version"])
    except redis.RedisError as exc:
        raise RuntimeError(f"Redis at {REDIS_URL} is not answering: {exc}") from exc
    return {"redis": redis_version, "postgresql": psql("show server_version")}
