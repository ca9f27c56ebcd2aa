"""Hostile paths and query strings at connect, with a good API key: each is refused by name before
anything reaches a runner, no usage row and no metric label is made for an app that does not exist,
and the victim's session never notices. The four assertions are described in ``harness``."""

from __future__ import annotations

import asyncio

import pytest

from tests.adversarial.attacks import ECHO, Attack, refused
from tests.adversarial.harness import Case, Expect, Harness, Outcome

NOT_FOUND = Expect(error="APP_UNAVAILABLE", reason=r"path|app", close=4404)
BAD_BUFFERING = Expect(error="VALIDATION_ERROR", reason="max_buffering", close=4400)
BAD_TOKEN = Expect(error="UNAUTHORIZED", reason="token", close=4401)
LONG = "a" * 5000


def unlabelled(path: str, app_id: str) -> Attack:
    """Refused, and /metrics holds no label set for the app id that does not exist."""

    async def attack(h: Harness) -> Outcome:
        outcome = await refused(path)(h)
        text = await asyncio.to_thread(h.metrics)
        if f'"{app_id}"' in text:
            lines = [line for line in text.splitlines() if f'"{app_id}"' in line]
            outcome.problems.append(f"/metrics has label sets for the unknown app {app_id[:40]!r}: {lines[:2]}")
        return outcome

    return attack


def with_token(query: str) -> Attack:
    """Refused at connect, with a good realtime token of the attacker placed in ``query``."""

    async def attack(h: Harness) -> Outcome:
        token = await asyncio.to_thread(h.token)
        return await refused(f"{ECHO}?{query.format(token=token)}", user=None)(h)

    return attack


def path_case(name: str, path: str) -> Case:
    return Case(name, refused(path), NOT_FOUND)


CASES = [
    path_case("space-in-sub-path", "/local/echo/real%20time"),
    path_case("hash-in-sub-path", "/local/echo/realtime%23x"),
    path_case("nul-in-sub-path", "/local/echo/realtime%00"),
    path_case("nul-in-owner", "/loc%00al/echo/realtime"),
    path_case("dot-dot-in-sub-path", "/local/echo/../echo/realtime"),
    path_case("dot-dot-as-alias", "/local/../realtime"),
    path_case("encoded-dot-dot", "/local/%2e%2e/realtime"),
    path_case("single-dot-alias", "/local/./realtime"),
    path_case("leading-double-slash", "//local/echo/realtime"),
    path_case("double-slash-between-owner-and-alias", "/local//echo/realtime"),
    path_case("double-slash-before-sub-path", "/local/echo//realtime"),
    path_case("unicode-owner", "/l%C3%B3cal/echo/realtime"),
    path_case("fullwidth-letter-alias", "/local/%EF%BD%85cho/realtime"),
    path_case("right-to-left-override", "/local/echo%E2%80%AE/realtime"),
    path_case("backslash-separator", "/local%5Cecho/realtime"),
    path_case("owner-of-5000-chars", f"/{LONG}/echo/realtime"),
    path_case("sub-path-of-5000-chars", f"/local/echo/{LONG}"),
    path_case("owner-of-101-chars", f"/{'o' * 101}/echo/realtime"),
    path_case("missing-sub-path", "/local/echo"),
    path_case("empty-sub-path", "/local/echo/"),
    path_case("root-path", "/"),
    path_case("wrong-sub-path", "/local/echo/stream"),
    path_case("extra-segment-after-sub-path", "/local/echo/realtime/extra"),
    path_case("encoded-question-mark-in-sub-path", "/local/echo/realtime%3Fmax_buffering=1"),
    path_case("encoded-slash-between-owner-and-alias", "/local%2Fecho/realtime"),
    path_case("encoded-slash-before-sub-path", "/local/echo%2Frealtime"),
    path_case("upper-case-app-id", "/LOCAL/ECHO/realtime"),
    path_case("trailing-dot-alias", "/local/echo./realtime"),
    Case("unknown-owner-leaves-no-metric", unlabelled("/nobody/echo/realtime", "nobody/echo"), NOT_FOUND),
    Case("unknown-alias-leaves-no-metric", unlabelled("/local/nothing/realtime", "local/nothing"), NOT_FOUND),
    Case(
        "app-id-of-201-chars-leaves-no-row-or-metric",
        unlabelled(f"/{'o' * 100}/{'a' * 100}/realtime", f"{'o' * 100}/{'a' * 100}"),
        NOT_FOUND,
    ),
    Case("dashboard-feed-with-an-api-key", refused("/admin/live"), Expect(close=4403)),
    Case("max-buffering-superscript-two", refused("/local/echo/realtime?max_buffering=%C2%B2"), BAD_BUFFERING),
    Case("max-buffering-arabic-indic-digit", refused("/local/echo/realtime?max_buffering=%D9%A3"), BAD_BUFFERING),
    Case("max-buffering-of-5000-digits", refused("/local/echo/realtime?max_buffering=" + "9" * 5000), BAD_BUFFERING),
    Case("max-buffering-minus-one", refused("/local/echo/realtime?max_buffering=-1"), BAD_BUFFERING),
    Case("max-buffering-zero", refused("/local/echo/realtime?max_buffering=0"), BAD_BUFFERING),
    Case("max-buffering-61", refused("/local/echo/realtime?max_buffering=61"), BAD_BUFFERING),
    Case("max-buffering-float", refused("/local/echo/realtime?max_buffering=1.5"), BAD_BUFFERING),
    Case("max-buffering-hex", refused("/local/echo/realtime?max_buffering=0x10"), BAD_BUFFERING),
    Case("max-buffering-leading-space", refused("/local/echo/realtime?max_buffering=%201"), BAD_BUFFERING),
    Case("max-buffering-trailing-nul", refused("/local/echo/realtime?max_buffering=1%00"), BAD_BUFFERING),
    Case("max-buffering-empty", refused("/local/echo/realtime?max_buffering="), BAD_BUFFERING),
    Case(
        "max-buffering-duplicated",
        refused("/local/echo/realtime?max_buffering=99&max_buffering=1"),
        BAD_BUFFERING,
    ),
    Case(
        "fal-jwt-token-garbage-beside-a-good-key", refused("/local/echo/realtime?fal_jwt_token=%FF%FE.x.y"), BAD_TOKEN
    ),
    Case("fal-jwt-token-empty-beside-a-good-key", refused("/local/echo/realtime?fal_jwt_token="), BAD_TOKEN),
    Case(
        "fal-jwt-token-three-dots-of-nothing",
        refused("/local/echo/realtime?fal_jwt_token=...", user=None),
        BAD_TOKEN,
    ),
    Case(
        "fal-jwt-token-duplicated-good-then-garbage",
        with_token("fal_jwt_token={token}&fal_jwt_token=garbage"),
        Expect(error=("UNAUTHORIZED", "VALIDATION_ERROR"), reason="token", close=(4401, 4400)),
    ),
    Case(
        "fal-jwt-token-duplicated-garbage-then-good",
        with_token("fal_jwt_token=garbage&fal_jwt_token={token}"),
        Expect(error=("UNAUTHORIZED", "VALIDATION_ERROR"), reason="token", close=(4401, 4400)),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_path_is_refused_by_name(harness: Harness, case: Case) -> None:
    await harness.check(case)
