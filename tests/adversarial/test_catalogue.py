"""The adversarial suite's own bookkeeping: enough cases, each named once."""

from __future__ import annotations

from tests.adversarial import (
    test_cluster,
    test_frames,
    test_gallery,
    test_headers,
    test_http,
    test_images,
    test_paths,
    test_rooms,
    test_throttling,
    test_timing,
)

MODULES = (
    test_paths,
    test_headers,
    test_frames,
    test_images,
    test_timing,
    test_http,
    test_throttling,
    test_cluster,
    test_rooms,
    test_gallery,
)


def test_catalogue_has_at_least_150_distinct_cases() -> None:
    ids = [case.id for module in MODULES for case in module.CASES]
    assert len(ids) >= 150, len(ids)
    assert len(set(ids)) == len(ids), sorted({i for i in ids if ids.count(i) > 1})
