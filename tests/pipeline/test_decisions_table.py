"""The decisions table of `dispatch_explanations`: reasons on the site's own clock."""

from __future__ import annotations

from dispatch_pipeline import solve_dispatch
from dispatch_pipeline.defs.dispatch.views import decisions_table
from dispatch_pipeline.demo import demo_request


def table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[:1] + lines[2:]]


def test_each_change_of_reason_is_listed_at_its_local_clock_time():
    result = solve_dispatch(demo_request("KL_MALL", "2024-06-21", use_milp=False))
    header, *rows = table_rows(decisions_table(result))
    assert header == ["local time (Asia/Kuala_Lumpur)", "reason_code", "reason"]
    # Kuala Lumpur is UTC+8: the day's first interval starts at 16:00 UTC and reads 00:00.
    assert result.points[0].ts == "2024-06-20T16:00:00Z"
    assert rows[0][:2] == ["00:00", result.points[0].reason_code]
    changes = [
        (index, point) for index, point in enumerate(result.points)
        if index == 0 or point.reason_code != result.points[index - 1].reason_code
    ]
    assert len(rows) == min(len(changes), 24)
    for row, (index, point) in zip(rows, changes, strict=False):
        assert row == [f"{index * 15 // 60:02d}:{index * 15 % 60:02d}", point.reason_code, point.reason]


def test_on_a_fall_back_day_the_repeated_hour_is_told_apart_by_its_offset():
    result = solve_dispatch(demo_request("BERLIN_DEPOT", "2024-10-27", use_milp=False))
    assert len(result.points) == 100
    # A reason that changes in every interval: each one is a row, the repeated 02:xx hour twice.
    alternating = result.model_copy(update={"points": [
        point.model_copy(update={"reason_code": f"code_{index % 2}"}) for index, point in enumerate(result.points)
    ]})
    clocks = [row[0] for row in table_rows(decisions_table(alternating, rows=100))[1:]]
    assert len(clocks) == 100
    assert clocks[:2] == ["00:00 (UTC+02:00)", "00:15 (UTC+02:00)"]
    assert clocks[8:16] == [f"02:{m:02d} (UTC+02:00)" for m in (0, 15, 30, 45)] + [
        f"02:{m:02d} (UTC+01:00)" for m in (0, 15, 30, 45)
    ]
    assert clocks[-1] == "23:45 (UTC+01:00)"


def test_a_table_cut_short_says_how_many_changes_it_leaves_out():
    result = solve_dispatch(demo_request("KL_MALL", "2024-06-21", use_milp=False))
    alternating = result.model_copy(update={"points": [
        point.model_copy(update={"reason_code": f"code_{index % 2}"}) for index, point in enumerate(result.points)
    ]})
    markdown = decisions_table(alternating)
    assert len(table_rows(markdown)) == 1 + 24
    assert markdown.splitlines()[-1] == "... and 72 more changes: the dispatch_explanations table has every interval."
