"""Deployment smoke check: the Dagster processes of a deployment, driven through GraphQL.

Used by `tests/deploy/test_smoke.py`, which starts a code server, the webserver and the daemon
against a scratch PostgreSQL instance, launches one site x date partition through the webserver's
GraphQL API and reads the result back. The pieces here know nothing about pytest:

- `start_process` / `stop_processes`: each Dagster process in a session (and process group) of its
  own, so that stopping it reaches everything it started (the code server's API server, the run
  workers and their solver workers). Detached Dagster processes do not reliably exit on SIGTERM,
  so stopping ends with SIGKILL for whatever is left, and reports anything that survived.
- `DagsterGraphQL`: the few queries and mutations the smoke check needs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

LOCATION_NAME = "dispatch_pipeline"
# Definitions without an explicit repository are served as this repository.
REPOSITORY_NAME = "__repository__"
JOB_NAME = "day_ahead_dispatch_job"
SITES_PARTITIONS_NAME = "sites"
PIPELINE_ASSETS = (
    "site_forecast",
    "site_tariff",
    "dispatch_schedule",
    "dispatch_explanations",
    "dispatch_kpis",
)
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


class SmokeError(RuntimeError):
    """The deployment did not behave: what was expected, and what was seen instead."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def grpc_workspace_yaml(host: str, port: int, location_name: str = LOCATION_NAME) -> str:
    """A workspace with one code location served over gRPC (as deploy/workspace.docker.yaml)."""
    return (
        "load_from:\n"
        "  - grpc_server:\n"
        f"      host: {host}\n"
        f"      port: {port}\n"
        f"      location_name: {location_name}\n"
    )


# --- processes ---------------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        # start_new_session: the pid is also the process group id and the session id.
        return self.popen.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


def start_process(
    name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path, cwd: Path | None = None
) -> ManagedProcess:
    """Start `argv` in a new session, stdout and stderr to `<log_dir>/<name>.log`."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    popen = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return ManagedProcess(name, popen, log_path, log)


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, session) of a live process, from /proc (Linux)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def session_members(session_ids: Iterable[int]) -> dict[int, int]:
    """{pid: session id} of every live (non-zombie) process in one of `session_ids`."""
    wanted = set(session_ids)
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and stat[0] != "Z" and stat[3] in wanted:
            members[int(entry.name)] = stat[3]
    return members


def describe_pids(pids: Iterable[int]) -> list[str]:
    described = []
    for pid in sorted(pids):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmdline = "?"
        described.append(f"{pid}: {cmdline.strip()[:200]}")
    return described


def _signal_sessions(processes: Sequence[ManagedProcess], sig: signal.Signals) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
    # A member that moved to a process group of its own is still in the session.
    for pid in session_members(p.pid for p in processes):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_processes(processes: Sequence[ManagedProcess], grace_s: float = 10.0) -> list[str]:
    """SIGTERM every session, SIGKILL what is left after `grace_s`; reap the started processes.

    Returns the processes still alive afterwards (should be none), described.
    """
    if not processes:
        return []
    _signal_sessions(processes, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        for process in processes:
            process.popen.poll()
        if not session_members(p.pid for p in processes) and all(
            p.popen.returncode is not None for p in processes
        ):
            break
        time.sleep(0.2)
    _signal_sessions(processes, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=10)
        if process._log is not None:
            process._log.close()
            process._log = None
    # Orphans are reparented and reaped by init; give that a moment.
    deadline = time.monotonic() + 5
    while (survivors := session_members(p.pid for p in processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [p for p in processes if p.popen.returncode is None]
    return describe_pids(set(survivors) | {p.pid for p in alive})


# --- GraphQL -----------------------------------------------------------------------------------

WORKSPACE_QUERY = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          ... on PythonError { message stack }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

RELOAD_LOCATION_MUTATION = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) { __typename }
}
"""

DAEMON_HEALTH_QUERY = """
query DaemonHealth {
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}
"""

ADD_DYNAMIC_PARTITION_MUTATION = """
mutation AddPartition($key: String!, $name: String!, $repo: RepositorySelector!) {
  addDynamicPartition(partitionKey: $key, partitionsDefName: $name, repositorySelector: $repo) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionsDefName partitionKey }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

LAUNCH_RUN_MUTATION = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { stack }
  }
}
"""

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName tags { key value } }
    ... on Error { message }
  }
}
"""

RUN_ERRORS_QUERY = """
query RunLogs($runId: ID!) {
  logsForRun(runId: $runId, limit: 1000) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ErrorEvent { error { message stack } }
      }
    }
    ... on Error { message }
  }
}
"""

ASSET_NODES_QUERY = """
query AssetNodes {
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    dependedByKeys { path }
    jobNames
    isPartitioned
  }
}
"""

ASSET_MATERIALIZATIONS_QUERY = """
query Materializations($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions) { partition runId stepKey }
    }
  }
}
"""


class DagsterGraphQL:
    """A small client of the webserver's GraphQL endpoint."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def close(self) -> None:
        self.client.close()

    def query(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = self.client.post("/graphql", json={"query": query, "variables": variables or {}})
        if response.status_code != 200:
            raise SmokeError(f"GraphQL HTTP {response.status_code}: {response.text[:2000]}")
        body = response.json()
        if body.get("errors"):
            raise SmokeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    # readiness

    def server_up(self) -> bool:
        try:
            return self.client.get("/server_info").status_code == 200
        except httpx.HTTPError:
            return False

    def location_status(self, name: str = LOCATION_NAME) -> tuple[str, str]:
        """("LOADED", "") when the location's repositories are served; else a status and why."""
        workspace = self.query(WORKSPACE_QUERY)["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            return "ERROR", workspace.get("message", workspace["__typename"])
        for entry in workspace["locationEntries"]:
            if entry["name"] != name:
                continue
            location = entry["locationOrLoadError"]
            if location is None:
                return entry["loadStatus"], "not loaded yet"
            if location["__typename"] == "PythonError":
                return "ERROR", location["message"] + "".join(location["stack"][-5:])
            if entry["loadStatus"] == "LOADED":
                return "LOADED", ""
            return entry["loadStatus"], ""
        return "MISSING", f"no location {name!r} in the workspace"

    def reload_location(self, name: str = LOCATION_NAME) -> None:
        self.query(RELOAD_LOCATION_MUTATION, {"name": name})

    def daemon_statuses(self) -> dict[str, bool]:
        statuses = self.query(DAEMON_HEALTH_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
        return {s["daemonType"]: bool(s["healthy"]) for s in statuses if s["required"]}

    # actions

    def add_dynamic_partition(self, partitions_def: str, key: str) -> str:
        """Adds `key`; returns the result type (a duplicate is fine: the sensor may be first)."""
        result = self.query(
            ADD_DYNAMIC_PARTITION_MUTATION,
            {"key": key, "name": partitions_def, "repo": repository_selector()},
        )["addDynamicPartition"]
        kind = result["__typename"]
        if kind not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
            raise SmokeError(f"addDynamicPartition({partitions_def}, {key}) failed: {result}")
        return kind

    def launch_partition_run(
        self, job_name: str, partition_key: str, tags: Mapping[str, str] | None = None
    ) -> str:
        """Launch (queue) one run of `job_name` for one partition; returns the run id."""
        all_tags = {"dagster/partition": partition_key, **(tags or {})}
        params = {
            "selector": {**repository_selector(), "jobName": job_name},
            "runConfigData": {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in all_tags.items()]},
        }
        result = self.query(LAUNCH_RUN_MUTATION, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise SmokeError(f"launchRun failed: {result}")
        return result["run"]["runId"]

    def run(self, run_id: str) -> dict[str, Any]:
        run = self.query(RUN_QUERY, {"runId": run_id})["runOrError"]
        if run["__typename"] != "Run":
            raise SmokeError(f"run {run_id}: {run}")
        return run

    def wait_for_run(self, run_id: str, timeout_s: float, poll_s: float = 1.0) -> dict[str, Any]:
        """The run once it reaches a terminal status; SmokeError on timeout (with its status)."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.run(run_id)
            if run["status"] in TERMINAL_RUN_STATUSES:
                return run
            if time.monotonic() > deadline:
                raise SmokeError(
                    f"run {run_id} still {run['status']} after {timeout_s:.0f} s\n"
                    + "\n".join(self.run_errors(run_id, include_all=True)[-30:])
                )
            time.sleep(poll_s)

    def run_errors(self, run_id: str, include_all: bool = False) -> list[str]:
        """The run's error events (or, with include_all, every event), one line (+stack) each."""
        logs = self.query(RUN_ERRORS_QUERY, {"runId": run_id})["logsForRun"]
        if logs["__typename"] != "EventConnection":
            return [f"logsForRun: {logs}"]
        lines = []
        seen_errors: set[str] = set()
        for event in logs["events"]:
            error = event.get("error")
            if (
                error is None
                and not include_all
                and event.get("level") not in ("ERROR", "CRITICAL")
            ):
                continue
            step = event.get("stepKey") or "-"
            line = f"[{event['__typename']}] {step}: {event.get('message', '')}"
            if error and error["message"] not in seen_errors:
                # The run failure repeats the step's error: show each error (and stack) once.
                seen_errors.add(error["message"])
                stack = "".join((error.get("stack") or [])[-4:])
                line += f"\n    {error['message'].strip()}\n{stack}"
            lines.append(line)
        return lines

    # reading back

    def asset_nodes(self) -> dict[str, dict[str, Any]]:
        """{asset name: node} with `deps` and `dependents` as sets of asset names."""
        nodes = {}
        for node in self.query(ASSET_NODES_QUERY)["assetNodes"]:
            name = "/".join(node["assetKey"]["path"])
            nodes[name] = {
                **node,
                "deps": {"/".join(k["path"]) for k in node["dependencyKeys"]},
                "dependents": {"/".join(k["path"]) for k in node["dependedByKeys"]},
            }
        return nodes

    def materializations(self, asset: str, partition_key: str) -> list[dict[str, Any]]:
        result = self.query(
            ASSET_MATERIALIZATIONS_QUERY,
            {"key": {"path": asset.split("/")}, "partitions": [partition_key]},
        )["assetOrError"]
        if result["__typename"] != "Asset":
            return []
        return result["assetMaterializations"]


@dataclass
class DagsterProcesses:
    """Started Dagster processes, the webserver's GraphQL client, and how to stop them all."""

    env: dict[str, str]
    log_dir: Path
    cwd: Path | None = None
    processes: list[ManagedProcess] = field(default_factory=list)
    graphql: DagsterGraphQL | None = None
    stopped: bool = False

    def start(self, name: str, argv: Sequence[str]) -> ManagedProcess:
        process = start_process(name, argv, self.env, self.log_dir, cwd=self.cwd)
        self.processes.append(process)
        return process

    def check_alive(self) -> None:
        """SmokeError (with its log) if a started process has exited."""
        for process in self.processes:
            if process.popen.poll() is not None:
                raise SmokeError(
                    f"{process.name} exited with code {process.popen.returncode}\n"
                    f"{process.log_tail()}"
                )

    def stop(self, grace_s: float = 10.0) -> list[str]:
        """Stop every process group; returns survivors (described), [] when all are gone."""
        if self.graphql is not None:
            self.graphql.close()
        survivors = stop_processes(self.processes, grace_s)
        self.stopped = True
        return survivors

    def exit_codes(self) -> dict[str, int | None]:
        return {p.name: p.popen.returncode for p in self.processes}

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"----- {p.name} (pid {p.pid}, {p.log_path}) -----\n{p.log_tail(lines)}"
            for p in self.processes
        )


def repository_selector() -> dict[str, str]:
    return {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME}


def wait_until(
    condition: Any, timeout_s: float, what: str, poll_s: float = 0.5, why: Any = None
) -> None:
    """Poll `condition()` until truthy; SmokeError naming `what` (and `why()`) on timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            detail = f": {why()}" if why is not None else ""
            raise SmokeError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
        time.sleep(poll_s)
