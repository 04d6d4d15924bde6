"""The plans a run has stored are served to its explanation and KPI steps, then let go."""

from __future__ import annotations

from dispatch_pipeline.defs.io_managers import _RunResults


def test_results_are_let_go_once_both_views_have_read_them():
    results = _RunResults()
    results.remember("run-1", {"a": "plan a", "b": "plan b"})

    assert results.recall("run-1", ["a", "b"], "dispatch_explanations") == {"a": "plan a", "b": "plan b"}
    # A reader reading again (a retried step) does not count as the other view.
    assert results.recall("run-1", ["a"], "dispatch_explanations") == {"a": "plan a"}
    assert results.recall("run-1", ["b"], "dispatch_kpis") == {"b": "plan b"}
    # Both views have read: a later load goes to the database.
    assert results.recall("run-1", ["a"], "dispatch_kpis") is None


def test_partitions_the_run_did_not_store_are_not_served():
    results = _RunResults()
    results.remember("run-1", {"a": "plan a"})
    assert results.recall("run-1", ["a", "b"], "dispatch_kpis") is None
    assert results.recall("run-2", ["a"], "dispatch_kpis") is None


def test_only_the_latest_runs_are_kept():
    results = _RunResults()
    for n in range(_RunResults.KEEP_RUNS + 1):
        results.remember(f"run-{n}", {"a": f"plan {n}"})
    assert results.recall("run-0", ["a"], "dispatch_kpis") is None
    assert results.recall(f"run-{_RunResults.KEEP_RUNS}", ["a"], "dispatch_kpis") == {"a": f"plan {_RunResults.KEEP_RUNS}"}
