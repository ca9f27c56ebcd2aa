"""``rooms.rates.MemberRates``: how fast one member may send, on a fake clock (no sleeps). Ops, points
and cursor moves each have a token bucket: a burst up to its limit passes, the next is refused with a
reason naming the rates, and said at most once a second ("" between); tokens come back with time, up
to the burst; cursors are dropped silently and never spend the ops bucket; point-heavy strokes are held
by the points bucket."""

from __future__ import annotations

import pytest

from realtime_site.rooms.ops import MAX_POINTS_PER_MESSAGE, Cursor, Down, Fill, Move, Op, Params, Simple, Up
from realtime_site.rooms.rates import (
    CURSORS_BURST,
    CURSORS_PER_SECOND,
    HISTORY_BURST,
    HISTORY_PER_SECOND,
    OPS_BURST,
    OPS_PER_SECOND,
    POINTS_BURST,
    POINTS_PER_SECOND,
    MemberRates,
)

UP = Up(1)
CURSOR = Cursor(10.0, 10.0)
FULL_MOVE = Move(1, (5.0,) * (2 * MAX_POINTS_PER_MESSAGE))  # as many points as one message may carry


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rates(clock: Clock) -> MemberRates:
    return MemberRates(clock)


def passes(rates: MemberRates, op: Op, times: int) -> int:
    """How many of ``times`` sends of ``op`` pass."""
    return sum(rates.refusal(op) is None for _ in range(times))


def test_the_limits_are_as_documented() -> None:
    assert (OPS_PER_SECOND, OPS_BURST) == (60, 120)
    assert (POINTS_PER_SECOND, POINTS_BURST) == (1500, 3000)
    assert (CURSORS_PER_SECOND, CURSORS_BURST) == (20, 20)


def test_a_burst_of_ops_up_to_the_limit_passes_and_the_next_is_refused_with_the_rate(rates: MemberRates) -> None:
    assert passes(rates, UP, int(OPS_BURST)) == OPS_BURST
    reason = rates.refusal(UP)
    assert reason is not None
    assert "60 messages" in reason and "1500 points" in reason and "a second" in reason
    assert "1 dropped so far" in reason
    assert rates.dropped == 1


@pytest.mark.parametrize("op", [Up(1), Fill("#000000"), Simple("clear"), Params({"prompt": "a"})])
def test_every_kind_of_op_spends_the_ops_bucket(rates: MemberRates, op: Op) -> None:
    assert passes(rates, op, int(OPS_BURST) + 5) == OPS_BURST


def test_refusals_are_told_at_most_once_a_second(rates: MemberRates, clock: Clock) -> None:
    passes(rates, UP, int(OPS_BURST))
    assert rates.refusal(UP)  # told
    assert rates.refusal(UP) == ""  # dropped, not told again
    assert rates.refusal(UP) == ""
    clock.now += 0.5
    assert passes(rates, UP, 30) == 30  # half a second: 30 tokens back
    assert rates.refusal(UP) == ""  # still within the second
    clock.now += 0.5
    assert passes(rates, UP, 30) == 30
    reason = rates.refusal(UP)  # a second since the member was told: told again, with the count
    assert reason and "5 dropped so far" in reason
    assert rates.refusal(UP) == ""
    assert rates.dropped == 6


def test_tokens_come_back_with_time_up_to_the_burst_only(rates: MemberRates, clock: Clock) -> None:
    passes(rates, UP, int(OPS_BURST))
    assert rates.refusal(UP) is not None
    clock.now += 0.1
    assert passes(rates, UP, 10) == 6  # 60 a second
    clock.now += 3600
    assert passes(rates, UP, 500) == OPS_BURST  # an hour idle still gives one burst


def test_a_steady_sender_at_the_rate_is_never_refused(rates: MemberRates, clock: Clock) -> None:
    passes(rates, UP, int(OPS_BURST))  # the burst spent first
    for _ in range(600):
        clock.now += 1 / 50  # below 60 a second
        assert rates.refusal(UP) is None


def test_cursors_have_their_own_bucket_and_are_dropped_silently(rates: MemberRates, clock: Clock) -> None:
    assert passes(rates, CURSOR, int(CURSORS_BURST)) == CURSORS_BURST
    for _ in range(10):
        assert rates.refusal(CURSOR) == ""  # dropped without a word, each time
    assert rates.dropped == 0
    assert passes(rates, UP, int(OPS_BURST)) == OPS_BURST  # cursors spent no op
    reason = rates.refusal(UP)
    assert reason and "1 dropped so far" in reason  # the silent cursor drops neither told nor counted
    clock.now += 0.5
    assert passes(rates, CURSOR, 20) == 10  # 20 a second


def test_ops_over_their_rate_leave_cursors_alone(rates: MemberRates) -> None:
    passes(rates, UP, int(OPS_BURST) + 10)
    assert passes(rates, CURSOR, int(CURSORS_BURST)) == CURSORS_BURST


def test_point_heavy_moves_are_held_by_the_points_bucket(rates: MemberRates, clock: Clock) -> None:
    per_move = MAX_POINTS_PER_MESSAGE
    fit = int(POINTS_BURST // per_move)  # 23 moves of 128 points: 2944 of the 3000
    assert passes(rates, FULL_MOVE, fit) == fit
    reason = rates.refusal(FULL_MOVE)
    assert reason and "1500 points" in reason
    assert rates.refusal(Move(1, (1.0, 1.0) * 56)) is None  # the 56 points left still pass
    assert rates.refusal(Move(1, (1.0, 1.0))) == ""  # none left: dropped
    assert rates.refusal(UP) is None  # ops carrying no points still pass: far from 120 messages
    clock.now += per_move / POINTS_PER_SECOND + 0.001
    assert rates.refusal(FULL_MOVE) is None  # 128 points back
    assert rates.refusal(FULL_MOVE) == ""


def test_a_downs_points_count_too(rates: MemberRates) -> None:
    down = Down(1, "#000000", 4.0, False, (1.0, 2.0) * MAX_POINTS_PER_MESSAGE)
    fit = int(POINTS_BURST // MAX_POINTS_PER_MESSAGE)
    assert passes(rates, down, fit + 3) == fit


def test_each_member_has_their_own_rates(clock: Clock) -> None:
    first, second = MemberRates(clock), MemberRates(clock)
    passes(first, UP, int(OPS_BURST) + 1)
    assert first.refusal(UP) == ""
    assert passes(second, UP, int(OPS_BURST)) == OPS_BURST


def test_the_first_refusal_is_told_whatever_the_clock_reads() -> None:
    rates = MemberRates(Clock(0.0))
    passes(rates, UP, int(OPS_BURST))
    assert rates.refusal(UP)


def test_undo_and_redo_have_their_own_lower_rate(rates: MemberRates, clock: Clock) -> None:
    undos = [rates.refusal(Simple("undo" if i % 2 else "redo")) for i in range(int(HISTORY_BURST) + 1)]
    assert undos[:-1] == [None] * int(HISTORY_BURST)
    assert undos[-1] and "5 undos" in undos[-1]
    assert rates.refusal(Simple("clear")) is None  # other ops go on
    clock.now += 1 / HISTORY_PER_SECOND
    assert rates.refusal(Simple("undo")) is None
