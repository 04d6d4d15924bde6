"""Helpers for the servers a benchmark starts."""

from __future__ import annotations

import os
import subprocess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Ask a server to stop (SIGTERM), kill it if it has not after `timeout_s`, and reap it."""
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()



def descendants(pid: int) -> list[int]:
    """Every live process below `pid`: children, theirs, and so on."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command name may hold spaces; fields after the last ')' are fixed.
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _stat_ticks(pid: int, first: int, second: int) -> float:
    """Two CPU time fields of /proc/PID/stat (counted after the command name), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[first]) + int(fields[second])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (0 once it is gone)."""
    return _stat_ticks(pid, 11, 12)


def reaped_children_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the children a process has reaped so far (0 once it is gone)."""
    return _stat_ticks(pid, 13, 14)


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_solver_worker(pid: int) -> bool:
    return "dispatch_pipeline.core.worker" in command_line(pid)
