"""Helpers for the servers a benchmark starts."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Ask a server to stop (SIGTERM), kill it if it has not after `timeout_s`, and reap it."""
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
