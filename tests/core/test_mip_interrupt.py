"""The MIP interrupt callback: stop in time to keep an incumbent when HiGHS calls it rarely."""

from __future__ import annotations

import math
from types import SimpleNamespace

from dispatch_pipeline.core.milp.highs import mip_interrupter


class Event:
    def __init__(self, primal_bound: float):
        self.data_out = SimpleNamespace(mip_primal_bound=primal_bound)
        self.interrupted = False

    def interrupt(self) -> None:
        self.interrupted = True


def calls(times: list[float], primal_bound: float, deadline: float = 10.0) -> list[bool]:
    """Whether each call, made at `times`, asked HiGHS to stop."""
    clock = iter(times)
    callback = mip_interrupter(deadline, clock=lambda: next(clock))
    events = [Event(primal_bound) for _ in times]
    for event in events:
        callback(event)
    return [event.interrupted for event in events]


def test_frequent_calls_search_on_to_within_one_call_of_the_deadline():
    times = [0.25 * n for n in range(1, 43)]  # every 0.25 s, to 10.5 s
    stopped = calls(times, primal_bound=5.0)
    # At 10.0 s the next call could come after the deadline: the last chance to stop in time.
    assert stopped.index(True) == times.index(10.0)


def test_with_an_incumbent_a_long_gap_seen_stops_the_search_before_the_next_could_overrun():
    # A 1.5 s silence (a heuristic, a restart) early on, then calls every 0.1 s: from 8.6 s on
    # the next could come after 10 s, when the worker may be stopped with the incumbent in it.
    times = [1.0, 2.5] + [2.5 + 0.1 * n for n in range(1, 70)]
    stopped = calls(times, primal_bound=5.0)
    first = stopped.index(True)
    assert 8.55 < times[first] < 8.65
    assert not any(stopped[:first])


def test_without_an_incumbent_the_search_goes_on_to_the_deadline():
    # Stopping early would give up the only chance of a schedule at all.
    assert calls([1.0, 2.5, 8.6, 9.9, 10.2], primal_bound=math.inf) == [False, False, False, False, True]
