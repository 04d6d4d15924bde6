"""A run launcher whose run processes start with Dagster and the libraries already imported.

Every Dagster run launcher starts a run in a new interpreter: the default one through the code
server (`multiprocessing` spawn), the Docker and Kubernetes ones in a container. Before its first
step, each such process imports Dagster, pandas, SQLAlchemy and the rest again: 1-1.5 s of CPU
per run on a 2-core machine, about a quarter of what a backfill run process spends. `WarmRunLauncher` starts
each run as a process forked from a fork server that imported those libraries once (Python's
`multiprocessing` "forkserver": a single-threaded process started fresh, so forking it is safe),
and executes it as `dagster api execute_run` does, the command Dagster's container launchers
run. The code location itself is imported in the run process, from the run's origin, as
every launcher does: a reloaded code location takes effect for the next run, with no restart.

Use it in `dagster.yaml` where the daemon, the webserver and the code location share one host and
one Python environment (`dagster dev`, a single-host deployment):

    run_launcher:
      module: dispatch_pipeline.dagster_run_launcher
      class: WarmRunLauncher
      config:
        preload_modules: [dagster, dagster_postgres, pandas, pyarrow, sqlalchemy]

A run whose code location runs on another interpreter (`executable_path` in workspace.yaml) is
launched through its code server, as the DefaultRunLauncher does. Terminating a run sends its
process SIGTERM, which Dagster turns into an interrupted, canceled run (as with a container's
stop); run monitoring fails a run whose process has exited without finishing it.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._cli.api import _execute_run_command_body
from dagster._cli.utils import get_instance_for_cli
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import deserialize_value, serialize_value
from dagster._utils.interrupts import capture_interrupts

# Where a run's process is, for terminating it and checking on it from another process of the
# same host (the webserver terminates runs the daemon launched).
RUN_PID_TAG = "dispatch/run_pid"
RUN_HOST_TAG = "dispatch/run_host"
DEFAULT_PRELOAD_MODULES = ("dagster",)


def _execute_run(serialized_execute_run_args: str) -> None:
    """The run process: what `dagster api execute_run` (the command the container launchers run)
    does, without its copy of every event serialized into a list that nothing reads: 6-7 % of a
    backfill run's CPU."""
    args = deserialize_value(serialized_execute_run_args, ExecuteRunArgs)
    with capture_interrupts(), get_instance_for_cli(instance_ref=args.instance_ref) as instance:
        return_code = _execute_run_command_body(
            args.run_id,
            instance,
            lambda _event: None,  # the events are in the instance's event log already
            set_exit_code_on_failure=bool(args.set_exit_code_on_failure),
        )
    if return_code != 0:
        sys.exit(return_code)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


class WarmRunLauncher(dg.DefaultRunLauncher):
    """Launches runs as processes forked from a fork server with `preload_modules` imported."""

    def __init__(self, inst_data=None, preload_modules: Sequence[str] = DEFAULT_PRELOAD_MODULES):
        super().__init__(inst_data=inst_data)
        self._preload_modules = list(preload_modules)
        self._fork_context = None

    @classmethod
    def config_type(cls):
        return {
            "preload_modules": dg.Field(
                [str],
                is_required=False,
                default_value=list(DEFAULT_PRELOAD_MODULES),
                description=(
                    "Modules the fork server imports once, so that no run process imports them "
                    "again: Dagster and the heavy libraries of the code location. Not the code "
                    "location itself, which would then stay as it was when the server started."
                ),
            )
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    def _forked_process_context(self):
        if self._fork_context is None:
            # The fork server skips a module it cannot import without a word: say which, here.
            missing = [name for name in self._preload_modules if not _importable(name)]
            if missing:
                raise dg.DagsterInvariantViolationError(
                    f"WarmRunLauncher: preload_modules {missing} cannot be imported by {sys.executable}"
                )
            context = multiprocessing.get_context("forkserver")
            # The fork server is one per process and starts on first use, with these imported.
            context.set_forkserver_preload(self._preload_modules)
            self._fork_context = context
        return self._fork_context

    def start_fork_server(self) -> None:
        """Start the fork server now, rather than with the first run (which would wait for it)."""
        self._forked_process_context()
        multiprocessing.forkserver.ensure_running()

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None or origin.executable_path != sys.executable:
            # Another interpreter (or no origin to load the job from): its code server starts it.
            if RUN_PID_TAG in run.tags or RUN_HOST_TAG in run.tags:
                # Copied from the run it re-executes (the daemon's retries keep their failed run's
                # tags): that process is not this run's, so nothing here may check or signal it.
                self._instance.add_run_tags(run.run_id, {RUN_PID_TAG: "", RUN_HOST_TAG: ""})
            super().launch_run(context)
            return
        execute_run_args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        process = self._forked_process_context().Process(
            target=_execute_run, args=(serialize_value(execute_run_args),), name=f"dagster-run-{run.run_id}"
        )
        process.start()
        # multiprocessing joins the children it knows of when this process exits: the daemon would
        # wait for every run in progress before stopping. Runs outlive it, as code server runs do;
        # the fork server reaps them.
        multiprocessing.process._children.discard(process)
        self._instance.add_run_tags(run.run_id, {RUN_PID_TAG: str(process.pid), RUN_HOST_TAG: socket.gethostname()})
        self._run_ids.add(run.run_id)

    def _local_pid(self, run: dg.DagsterRun) -> int | None:
        """The run's process id, when a WarmRunLauncher of this host started it."""
        if run.tags.get(RUN_HOST_TAG) != socket.gethostname() or RUN_PID_TAG not in run.tags:
            return None
        return int(run.tags[RUN_PID_TAG])

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        pid = self._local_pid(run)
        if pid is None:
            return super().terminate(run_id)
        self._instance.report_run_canceling(run)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            self._instance.report_engine_event(
                f"Run process {pid} had already exited when asked to terminate.", run, cls=self.__class__
            )
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        pid = self._local_pid(run)
        if pid is None:
            # Launched through a code server or on another host: nothing to look at from here, and
            # anything but RUNNING would make run monitoring fail the run. Its timeouts still apply.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not started by this host's WarmRunLauncher")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run process {pid} has exited")
        except PermissionError:
            pass  # a process of another user: it exists
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run process {pid} is running")
