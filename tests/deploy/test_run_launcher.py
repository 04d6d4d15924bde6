"""WarmRunLauncher: runs start as processes forked from a fork server, execute as `dagster api
execute_run` does, can be terminated, and run monitoring fails a run whose process died."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
from dagster._core.launcher import WorkerStatus
from dagster._daemon.monitoring.run_monitoring import monitor_started_run

from dispatch_pipeline.dagster_run_launcher import RUN_PID_TAG, WarmRunLauncher
from tests.deploy.launched_jobs import process_report_job

WAIT_S = 60.0
LAUNCHER = {
    "module": "dispatch_pipeline.dagster_run_launcher",
    "class": "WarmRunLauncher",
    "config": {"preload_modules": ["dagster", "pandas"]},
}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(overrides={"run_launcher": LAUNCHER}) as instance:
        yield instance


def _wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {WAIT_S:.0f} s waiting for {what}")
        time.sleep(0.1)


def _launch(
    instance: dg.DagsterInstance, report: Path, sleep_s: float = 0.0, executable: str | None = None, fail_with: str = ""
) -> str:
    origin = dg.reconstructable(process_report_job).get_python_origin()
    if executable is not None:
        origin = origin._replace(repository_origin=origin.repository_origin._replace(executable_path=executable))
    run = instance.create_run_for_job(
        process_report_job,
        run_config={
            "ops": {"report_process": {"config": {"report_path": str(report), "sleep_s": sleep_s, "fail_with": fail_with}}}
        },
        job_code_origin=origin,
    )
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    return run.run_id


def _run(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run


def _command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_a_launched_run_executes_in_a_process_forked_from_the_fork_server(instance, tmp_path):
    assert isinstance(instance.run_launcher, WarmRunLauncher)
    report = tmp_path / "process"

    run_id = _launch(instance, report)
    _wait_for(lambda: _run(instance, run_id).is_finished, "the run to finish")

    assert _run(instance, run_id).status == dg.DagsterRunStatus.SUCCESS
    pid, parent = (int(n) for n in report.read_text().split())
    assert _run(instance, run_id).tags[RUN_PID_TAG] == str(pid)
    # Not a child of the launching process (as spawned run processes are): of the fork server.
    assert parent != os.getpid()
    assert "forkserver" in _command_line(parent)
    started = [e.message for e in instance.all_logs(run_id) if e.message and e.message.startswith("Started process")]
    assert started == [f"Started process for run (pid: {pid})."]


def test_a_run_whose_step_fails_ends_failed_with_the_error_in_its_event_log(instance, tmp_path):
    run_id = _launch(instance, tmp_path / "process", fail_with="forecast feed unreachable")
    _wait_for(lambda: _run(instance, run_id).is_finished, "the run to finish")

    assert _run(instance, run_id).status == dg.DagsterRunStatus.FAILURE
    failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    assert len(failures) == 1
    error = failures[0].event_log_entry.dagster_event.step_failure_data.error
    assert "forecast feed unreachable" in error.to_string()


def test_terminating_a_run_cancels_it(instance, tmp_path):
    report = tmp_path / "process"
    run_id = _launch(instance, report, sleep_s=WAIT_S * 2)
    _wait_for(report.exists, "the op to start")

    assert instance.run_launcher.terminate(run_id)

    _wait_for(lambda: _run(instance, run_id).is_finished, "the run to stop")
    assert _run(instance, run_id).status == dg.DagsterRunStatus.CANCELED


def test_a_run_process_that_died_is_a_failed_worker(instance, tmp_path):
    report = tmp_path / "process"
    run_id = _launch(instance, report, sleep_s=WAIT_S * 2)
    _wait_for(report.exists, "the op to start")
    pid = int(report.read_text().split()[0])
    run = _run(instance, run_id)
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING

    os.kill(pid, signal.SIGKILL)

    _wait_for(lambda: instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.FAILED,
              "the dead process to be seen")
    monitor_started_run(instance, None, instance.get_run_record_by_id(run_id), logging.getLogger(__name__))
    assert _run(instance, run_id).status == dg.DagsterRunStatus.FAILURE


def test_a_run_on_another_interpreter_goes_to_its_code_server(instance, tmp_path):
    other_python = str(tmp_path / "other-venv" / "bin" / "python")
    assert other_python != sys.executable
    with mock.patch.object(dg.DefaultRunLauncher, "launch_run") as through_code_server:
        run_id = _launch(instance, tmp_path / "process", executable=other_python)

    assert [call.args[0].dagster_run.run_id for call in through_code_server.call_args_list] == [run_id]
    run = _run(instance, run_id)
    assert RUN_PID_TAG not in run.tags
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING


def test_a_retry_launched_through_its_code_server_is_not_taken_for_its_parents_process(instance, tmp_path):
    """The daemon's retries carry their failed run's tags, this launcher's process tags among
    them: a retry that goes to its code server must not be judged, or terminated, by the
    failed run's process id."""
    dead = _launch(instance, tmp_path / "first")
    _wait_for(lambda: _run(instance, dead).is_finished, "the first run to finish")
    parent_tags = {key: value for key, value in _run(instance, dead).tags.items() if key.startswith("dispatch/")}
    assert parent_tags[RUN_PID_TAG]
    other_python = str(tmp_path / "other-venv" / "bin" / "python")
    origin = dg.reconstructable(process_report_job).get_python_origin()
    origin = origin._replace(repository_origin=origin.repository_origin._replace(executable_path=other_python))
    retry = instance.create_run_for_job(
        process_report_job,
        run_config={"ops": {"report_process": {"config": {"report_path": str(tmp_path / "retry")}}}},
        job_code_origin=origin,
        tags={**parent_tags, "dagster/retry_number": "1"},
    )
    with mock.patch.object(dg.DefaultRunLauncher, "launch_run"):
        instance.launch_run(retry.run_id, workspace=None)  # type: ignore[arg-type]

    run = _run(instance, retry.run_id)
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    with mock.patch("os.kill") as kill, mock.patch.object(dg.DefaultRunLauncher, "terminate", return_value=True):
        instance.run_launcher.terminate(retry.run_id)
    assert not kill.called


def test_a_preload_module_that_cannot_be_imported_fails_the_launch_naming_it(tmp_path):
    launcher = {**LAUNCHER, "config": {"preload_modules": ["dagster", "pandsa"]}}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:
        with pytest.raises(dg.DagsterInvariantViolationError, match=r"preload_modules \['pandsa'\]"):
            _launch(instance, tmp_path / "process")
        assert not (tmp_path / "process").exists()
