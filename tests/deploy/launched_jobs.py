"""Jobs that tests launch through `WarmRunLauncher`: importable by module path, as a run process
loads its job from the run's origin."""

import os
import time
from pathlib import Path

import dagster as dg


class ProcessReport(dg.Config):
    report_path: str
    sleep_s: float = 0.0
    fail_with: str = ""


@dg.op
def report_process(config: ProcessReport) -> None:
    """Write this run process's id and its parent's, then wait `sleep_s` (to be terminated), then
    fail if told to."""
    Path(config.report_path).write_text(f"{os.getpid()} {os.getppid()}")
    time.sleep(config.sleep_s)
    if config.fail_with:
        raise RuntimeError(config.fail_with)


# In the run's own process, as the pipeline's runs execute.
@dg.job(executor_def=dg.in_process_executor)
def process_report_job() -> None:
    report_process()
