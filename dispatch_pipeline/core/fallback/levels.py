"""The energy the battery needs at the end of each interval to end the day on target, when the
later intervals can add and will take out given energies: the floors and levels the rules hold."""

from __future__ import annotations

import math

import numpy as np

# levels_needed works up to this many rows out one by one, more at once (where that is faster).
_ROWS_ONE_BY_ONE = 4


def sum_after(values: np.ndarray) -> np.ndarray:
    """For each t, the sum of values strictly after t."""
    return np.concatenate((values[:0:-1].cumsum()[::-1], (0.0,)))


def levels_needed(
    gains: np.ndarray, loss: np.ndarray, final: float, lowest: float, highest: float, since: np.ndarray
) -> np.ndarray:
    """level_needed for each row of `gains`, from since[k] on in row k (NaN or exact before).

    Without losses, at once; with a few rows, one by one (each a few tens of microseconds);
    with more, without a Python loop over the intervals: each interval u, worked backwards, maps
    the level after it to the one before it by x -> min(top, max(lowest, x + taken[u])). Such
    maps compose into one of the same form (a shift, and a floor and a ceiling), so the level at
    every t, the maps of the intervals after it applied to `final`, is a prefix scan: log2(T)
    steps over the whole array."""
    rows, T = gains.shape
    if not np.count_nonzero(loss):  # level_needed's own shortcut, row by row
        needed = np.empty((rows, T))
        needed[:, :-1] = np.maximum(lowest, final - gains[:, :0:-1].cumsum(axis=1)[:, ::-1])
        needed[:, -1] = final
        return needed
    if rows <= _ROWS_ONE_BY_ONE:
        return np.array(
            [level_needed(gain, loss, final, lowest, highest, int(first)) for gain, first in zip(gains, since, strict=True)]
        )
    top = max(highest, final)
    # Backwards: position j holds the interval T - 1 - j, and after the scan the composition of
    # the maps of intervals T - 1 down to T - 1 - j.
    shift = (loss[None, :] - gains)[:, ::-1].copy()
    floor = np.full((rows, T), float(lowest))
    ceiling = np.full((rows, T), float(top))
    step = 1
    while step < T:
        # Applying the earlier composition first: (s1, f1, c1) then (s2, f2, c2) is
        # (s1 + s2, clip(f1 + s2, f2, c2), clip(c1 + s2, f2, c2)).
        s2, f2, c2 = shift[:, step:], floor[:, step:], ceiling[:, step:]
        new_floor = np.minimum(np.maximum(floor[:, :-step] + s2, f2), c2)
        new_ceiling = np.minimum(np.maximum(ceiling[:, :-step] + s2, f2), c2)
        shift[:, step:] = shift[:, :-step] + s2
        floor[:, step:], ceiling[:, step:] = new_floor, new_ceiling
        step *= 2
    needed = np.empty((rows, T))
    needed[:, -1] = final
    # The level at the end of t: the maps of intervals T - 1 down to t + 1, position T - 2 - t.
    composed = slice(T - 2, None, -1)
    needed[:, :-1] = np.minimum(np.maximum(final + shift[:, composed], floor[:, composed]), ceiling[:, composed])
    return needed


def level_needed(
    gain: np.ndarray, loss: np.ndarray, final: float, lowest: float, highest: float, since: int = 0
) -> np.ndarray:
    """For each t, the energy the battery needs at the end of t to end the day at `final`, when
    each later interval u can add at most gain[u] and will take loss[u] out (from t = `since` on:
    the loop below stops there, and leaves the earlier ones NaN).

    Worked backwards from the end of the day: an interval that takes energy out raises the level
    needed before it, one that can add energy lowers it, but never below `lowest` (the battery
    cannot give what it holds below it) nor above `highest` or `final`, whichever is higher (it
    cannot hold more: as full as it can be is the best it can do). A loss and a gain never fall in
    the same interval. Without losses this is `final` less what the later intervals can add.
    """
    if not np.count_nonzero(loss):  # most days: the same, without a Python loop
        needed = np.maximum(lowest, final - sum_after(gain))
        needed[-1] = final
        return needed
    # On plain floats, backwards: the same arithmetic as numpy's, a few times faster (it runs
    # several times a pass). min(highest, max(lowest, x)), spelt out.
    needed = []
    level, highest = final, max(highest, final)
    for taken, added in zip(loss[since:][::-1].tolist(), gain[since:][::-1].tolist(), strict=True):
        needed.append(level)
        level = level + taken - added
        level = level if level > lowest else lowest
        level = level if level < highest else highest
    needed += [math.nan] * since
    needed.reverse()
    return np.fromiter(needed, float, len(needed))

