"""Day plots: one figure serves every plot of a run, and no plot carries anything of the last."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from dispatch_pipeline import solve_dispatch
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.request import parse_request
from dispatch_pipeline.defs.dispatch.metadata import DayPlotter
from dispatch_pipeline.demo import demo_request


def planned(site_id: str, date: str):
    request = demo_request(site_id, date, use_milp=False)
    return solve_dispatch(request), build_problem(parse_request(request))


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
    for result, problem in days:
        plotter.png_base64(result, problem)
        flows = [*problem.load_kw, *problem.pv_kw]
        flows += [p.grid_imp_kw - p.grid_exp_kw for p in result.points]
        flows += [p.batt_dis_kw - p.batt_ch_kw for p in result.points]
        low, high = plotter.power_axes.get_ylim()
        assert low <= min(flows) and max(flows) <= high
        assert high - low < 1.5 * (max(flows) - min(flows))  # fitted to this day, not the last


def test_plots_are_png_of_a_fixed_size(days):
    for result, problem in days:
        image = Image.open(io.BytesIO(base64.b64decode(DayPlotter().png_base64(result, problem))))
        assert (image.format, image.size) == ("PNG", (720, 288))
