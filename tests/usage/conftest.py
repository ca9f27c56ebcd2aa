"""Fixtures of the usage tests."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database of its own (on 127.0.0.1:5432); its name."""
    name = f"realtime_usage_{uuid.uuid4().hex[:8]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c"]
    subprocess.run([*psql, f"create database {name}"], check=True, capture_output=True)
    yield name
    subprocess.run([*psql, f"drop database if exists {name} with (force)"], capture_output=True)
