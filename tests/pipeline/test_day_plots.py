"""Day plots: one figure serves every plot of a run, and no plot carries anything of the last."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from dispatch_pipeline import solve_dispatch
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.request import parse_request
from dispatch_pipeline.defs.dispatch.metadata import POWER_CURVES, DayPlotter
from dispatch_pipeline.demo import demo_request, demo_site


def planned(site_id: str, date: str):
    request = demo_request(site_id, date, use_milp=False)
    return solve_dispatch(request), build_problem(parse_request(request)), demo_site(site_id).currency


@pytest.fixture(scope="module")
def days():
    # An ordinary day, and Berlin's fall-back day (100 intervals) in another timezone.
    return [planned("KL_MALL", "2024-06-21"), planned("BERLIN_DEPOT", "2024-10-27")]


def test_a_reused_plotter_draws_each_day_as_a_fresh_one_would(days):
    reused = DayPlotter()
    first, second = (reused.png_base64(*day) for day in days)
    assert reused.png_base64(*days[0]) == first
    assert DayPlotter().png_base64(*days[1]) == second
    assert first != second


def test_the_power_axis_spans_each_day_drawn(days):
    plotter = DayPlotter()
    for result, problem, currency in days:
        plotter.png_base64(result, problem, currency)
        flows = [*problem.load_kw, *problem.pv_kw]
        flows += [p.grid_imp_kw - p.grid_exp_kw for p in result.points]
        flows += [p.batt_dis_kw - p.batt_ch_kw for p in result.points]
        low, high = plotter.power_axes.get_ylim()
        assert low <= min(flows) and max(flows) <= high
        assert high - low < 1.5 * (max(flows) - min(flows))  # fitted to this day, not the last


def test_plots_are_png_of_a_fixed_size(days):
    for result, problem, currency in days:
        image = Image.open(io.BytesIO(base64.b64decode(DayPlotter().png_base64(result, problem, currency))))
        assert (image.format, image.size) == ("PNG", (720, 288))


def drawn_lines(plotter: DayPlotter) -> dict[str, np.ndarray]:
    """x positions of each curve drawn (power curves and SOC), by legend label."""
    labels = {label for label, _ in POWER_CURVES} | {"SOC"}
    lines = [line for axes in plotter.power_axes.figure.axes for line in axes.get_lines()]
    return {
        line.get_label(): np.asarray(line.get_xdata(orig=False), float)
        for line in lines
        if line.get_label() in labels
    }


def ticks(plotter: DayPlotter) -> tuple[np.ndarray, list[str]]:
    axes = plotter.power_axes
    return np.asarray(axes.get_xticks(), float), [
        label.get_text() for label in axes.get_xticklabels()
    ]


@pytest.mark.parametrize(
    ("site_id", "date", "points"),
    [
        ("KL_MALL", "2024-06-21", 96),
        ("BERLIN_DEPOT", "2024-10-27", 100),
        ("BERLIN_DEPOT", "2024-03-31", 92),
    ],
)
def test_curves_run_forward_in_real_time(site_id, date, points):
    # On the fall-back day the repeated hour must not fold back onto the axis: x is real time.
    plotter = DayPlotter()
    plotter.png_base64(*planned(site_id, date))
    lines = drawn_lines(plotter)
    assert len(lines) == len(POWER_CURVES) + 1
    for label, x in lines.items():
        assert len(x) == points, label
        steps = np.diff(x)
        assert (steps > 0).all(), label
        assert np.allclose(steps, steps[0]), (
            label
        )  # evenly spaced: every interval is 15 real minutes


def test_ticks_show_the_local_clock_at_real_time_positions():
    plotter = DayPlotter()
    normal = planned("KL_MALL", "2024-06-21")
    plotter.png_base64(*normal)
    positions, labels = ticks(plotter)
    quarter = np.diff(drawn_lines(plotter)["load"])[0]
    assert labels[:8] == ["00:00", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00"]
    assert np.allclose(np.diff(positions[:8]), 12 * quarter)
    assert "UTC" not in plotter.power_axes.get_xlabel()

    plotter.png_base64(*planned("BERLIN_DEPOT", "2024-10-27"))
    positions, labels = ticks(plotter)
    x = drawn_lines(plotter)["load"]
    quarter = np.diff(x)[0]
    assert labels[:8] == ["00:00", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00"]
    # 00:00 to 03:00 local is four real hours on the fall-back day, then three hours a tick.
    assert np.allclose(np.diff(positions[:8]), [16 * quarter] + [12 * quarter] * 6)
    assert positions[0] == pytest.approx(x[0])
    assert (
        "UTC+02:00" in plotter.power_axes.get_xlabel()
        and "UTC+01:00" in plotter.power_axes.get_xlabel()
    )

    # A reused plotter carries no DST note into the next, ordinary day.
    plotter.png_base64(*normal)
    assert "UTC" not in plotter.power_axes.get_xlabel()
