"""`dagster dev` as a child process, and its GraphQL API over plain HTTP: shared by the demo loop
(``clm.demo``) and the test that runs the server for real (tests/test_dagster_dev.py).

Dagster-free on purpose (subprocess + urllib): the caller talks to the server the way an operator's
tools would. The server runs in a process group of its own (``start_new_session``, what ``set -m``
gives a job in a script; a ``dagster dev &`` without it ignores SIGTERM), so one SIGTERM to the group
stops the webserver, the daemon, the code server and any run worker together.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 90
# dagster's code server waits up to 60 s for gRPC calls in flight (e.g. a sensor tick) before it exits
STOP_TIMEOUT_S = 120
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


class GraphQLError(RuntimeError):
    """The server answered with ``errors``."""


def dagster_command() -> str:
    """The ``dagster`` beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("dagster")
    found = str(beside) if beside.exists() else shutil.which("dagster")
    if found is None:
        raise FileNotFoundError("the 'dagster' command is not installed in this environment")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None, *, timeout: float = 30) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise GraphQLError(payload["errors"])
    return payload["data"]


# ------------------------------------------------------------------------------------------------
# processes (from /proc: a container's init may never reap orphans, so zombies count as gone)
# ------------------------------------------------------------------------------------------------


def proc_stat(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, ...], or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has exited; only its parent's wait is missing


def descendants(root: int) -> set[int]:
    """Every live process below ``root``, to check that none outlives the stop."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(entry.name)
            if stat is not None:
                children.setdefault(int(stat[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def group_alive(pgid: int) -> bool:
    """A live (not zombie) process is still in the group."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(entry.name)
            if stat is not None and stat[0] != "Z" and int(stat[2]) == pgid:
                return True
    return False


# ------------------------------------------------------------------------------------------------
# the server
# ------------------------------------------------------------------------------------------------


LOCATION = """{
  workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } }
  assetNodes { assetKey { path } groupName opNames isPartitioned }
  repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } }
}"""

RUNS = """query ($limit: Int) {
  runsOrError(limit: $limit) { __typename
    ... on Runs { results { runId jobName status creationTime startTime endTime tags { key value } } }
    ... on PythonError { message } }
}"""

LAUNCH = """mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) { __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message } }
}"""

SENSOR = """query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { name sensorState { status ticks(limit: 10) { tickId status timestamp skipReason runIds
                                                                  error { message } } } }
    ... on PythonError { message }
  }
}"""

START_SENSOR = """mutation ($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) { __typename ... on Sensor { sensorState { status } }
                                           ... on PythonError { message } }
}"""

INSTIGATORS = """query ($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) { __typename
    ... on Repository { sensors { name sensorState { status } } schedules { name scheduleState { status } } } }
}"""


class DevServer:
    """One ``dagster dev`` on 127.0.0.1 in its own process group; ``stop`` leaves no process behind."""

    def __init__(self, cwd: Path, env: dict[str, str], log_path: Path, port: int | None = None,
                 workspace: str = "workspace.yaml"):
        self.cwd, self.env, self.log_path = Path(cwd), env, Path(log_path)
        self.port = port or free_port()
        self.workspace = workspace
        self.proc: subprocess.Popen | None = None
        self.seen: set[int] = set()
        self.location: str | None = None
        self.repository: str | None = None
        self._log = None

    def start(self) -> DevServer:
        self._log = open(self.log_path, "w")
        command = [dagster_command(), "dev", "-w", self.workspace, "-h", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(command, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    @property
    def pgid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def query(self, query: str, variables: dict | None = None) -> dict:
        return graphql(self.port, query, variables)

    def wait_for_location(self, timeout: float = START_TIMEOUT_S) -> dict:
        """The asset graph, once the webserver answers and the code location has loaded."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                data = self.query(LOCATION)
            except (OSError, urllib.error.URLError) as exc:
                last = exc  # not listening yet
                time.sleep(1)
                continue
            entries = data["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries) and data["assetNodes"]:
                errors = [e["locationOrLoadError"] for e in entries
                          if e["locationOrLoadError"]["__typename"] == "PythonError"]
                if errors:
                    raise RuntimeError(f"the code location failed to load: {errors}")
                (repo,) = data["repositoriesOrError"]["nodes"]
                self.location, self.repository = repo["location"]["name"], repo["name"]
                return data
            last = entries
            time.sleep(1)
        raise TimeoutError(f"dagster dev did not load the code location in {timeout:.0f}s ({last}); log:\n"
                           f"{self.log_tail()}")

    def repository_selector(self) -> dict:
        return {"repositoryLocationName": self.location, "repositoryName": self.repository}

    def launch(self, job: str, *, tags: dict[str, str] | None = None, run_config: dict | None = None) -> str:
        """Launch (queue) a run of ``job``; its run id."""
        params = {"selector": {**self.repository_selector(), "jobName": job}, "runConfigData": run_config or {},
                  "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}
        result = self.query(LAUNCH, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise GraphQLError(f"launching {job}: {result}")
        return result["run"]["runId"]

    def runs(self, limit: int = 500) -> list[dict]:
        """Dagster's run history, newest first: runId, jobName, status, times (epoch s) and tags as a dict."""
        result = self.query(RUNS, {"limit": limit})["runsOrError"]
        if result["__typename"] != "Runs":
            raise GraphQLError(result)
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in result["results"]]

    def ensure_sensors_running(self, names: Iterable[str]) -> list[str]:
        """Start each named sensor that is not RUNNING (CLM's default to RUNNING, but one stopped in the UI
        stays stopped in the instance's storage); the names it started."""
        wanted = set(names)
        repo = self.query(INSTIGATORS, {"selector": self.repository_selector()})["repositoryOrError"]
        missing = wanted - {s["name"] for s in repo.get("sensors", [])}
        if missing:
            raise RuntimeError(f"sensors not in the code location: {sorted(missing)}")
        started = []
        for sensor in repo.get("sensors", []):
            if sensor["name"] in wanted and sensor["sensorState"]["status"] != "RUNNING":
                selector = {**self.repository_selector(), "sensorName": sensor["name"]}
                self.query(START_SENSOR, {"selector": selector})
                started.append(sensor["name"])
        return started

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to the group, SIGKILL after ``timeout``; then any straggler seen below it."""
        if self.proc is None:
            return
        try:
            if group_alive(self.pgid):
                self.seen |= descendants(self.pgid)
                os.killpg(self.pgid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(self.pgid, signal.SIGKILL)
                    self.proc.wait()
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and group_alive(self.pgid):
                    time.sleep(0.2)
                if group_alive(self.pgid):
                    os.killpg(self.pgid, signal.SIGKILL)
            else:
                self.proc.poll()
            for pid in self.seen:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
