"""One live stack for the adversarial cases that share it (SQLite, in-memory channel layer); modules
that need other settings start their own through ``live_harness``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adversarial.harness import Harness, live_harness


@pytest.fixture(scope="package")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with live_harness(tmp_path_factory.mktemp("adversarial")) as live:
        yield live
