"""A real multi-node Ray cluster on this machine: a head and worker nodes as separate processes.

Each node is ``ray start --block`` in its own process group, with its own ``--temp-dir`` and
ports, so stopping the cluster ends exactly the processes it started (``ray stop`` would end
every Ray process on the machine).

Addresses: the nodes are started with ``--node-ip-address 127.0.0.1``, but Ray (2.60) replaces
127.0.0.1 by the machine's own address and its servers listen on every interface; the only
switch that keeps a node on loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) also refuses
worker nodes. Traffic between the nodes still never leaves this machine (packets to its own
address go through the loopback device).

Readiness is a handshake, not a sleep: a short-lived driver polls ``ray.nodes()`` until every node
is alive with its CPU registered.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
#: for the nodes and the drivers: no usage reports; no token authentication (with it, a token file
#: in ~/.ray would have to match on every node and driver)
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RayCluster:
    """``workers`` worker nodes beside the head, ``cpus`` CPUs each (the head too)."""

    workers: int = 2
    cpus: int = 1
    object_store_bytes: int = 100 * 1024 * 1024
    port: int = field(default_factory=free_port)
    client_port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen] = field(default_factory=list)
    root: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    @property
    def nodes(self) -> int:
        return 1 + self.workers

    def _start(self, name: str, args: list[str]) -> None:
        assert self.root is not None
        env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process in stop()
        cmd = [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus),
               "--object-store-memory", str(self.object_store_bytes), "--disable-usage-stats",
               "--dashboard-agent-listen-port", str(free_port()), *args]
        self.procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                           start_new_session=True))
        log.close()

    def start(self, timeout: float = 120) -> RayCluster:
        """Start the nodes and wait until all are up; on failure stop what started, then raise."""
        try:
            self._start_nodes(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_nodes(self, timeout: float) -> None:
        # short: Ray's socket paths under the temp dir must stay below 108 bytes
        self.root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self._start("head", ["--head", "--port", str(self.port), "--include-dashboard=false",
                             "--ray-client-server-port", str(self.client_port),
                             "--temp-dir", str(self.root / "h")])
        self._wait_for_head(timeout)
        for i in range(self.workers):
            self._start(f"worker{i}", ["--address", self.address, "--temp-dir", str(self.root / f"w{i}")])
        self._wait_for_nodes(timeout)

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"`{' '.join(p.args)}` exited with {p.returncode}:\n{self.logs()}")

    def _wait_for_head(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"the Ray head did not listen on {self.address} within {timeout} s:\n{self.logs()}")

    def _wait_for_nodes(self, timeout: float) -> None:
        """A driver in a subprocess polls ray.nodes() until every node is alive with its CPUs."""
        script = (
            "import sys, time, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
            f"deadline = time.monotonic() + {timeout}\n"
            "while time.monotonic() < deadline:\n"
            "    alive = [n for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU', 0) > 0]\n"
            f"    if len(alive) == {self.nodes} and ray.cluster_resources().get('CPU') == {self.nodes * self.cpus}:\n"
            "        sys.exit(0)\n"
            "    time.sleep(0.2)\n"
            "sys.exit(f'only {len(alive)} nodes alive')\n"
        )
        env = {**os.environ, **ENV}
        try:
            done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                  timeout=timeout + 30)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"the Ray cluster did not come up within {timeout} s:\n{self.logs()}") from exc
        self._check_alive()
        if done.returncode != 0:
            raise RuntimeError(f"the Ray cluster did not come up: {done.stderr[-3000:]}\n{self.logs()}")

    def logs(self) -> str:
        if self.root is None:
            return ""
        logs = sorted(self.root.glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs)

    def _session_members(self) -> list[int]:
        """Every live process in the sessions of the nodes this cluster started.

        Each ``ray start`` leads a session; its raylet, GCS and agents share the process group,
        the Ray workers have groups of their own but stay in the session.
        """
        sessions = {p.pid for p in self.procs}
        members = []
        for pid in psutil.pids():
            try:
                if os.getsid(pid) in sessions:
                    members.append(pid)
            except (ProcessLookupError, PermissionError):
                continue
        return members

    def stop(self, timeout: float = 3) -> None:
        """Stop the nodes this cluster started: SIGTERM, then SIGKILL to what is left of their sessions."""
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for pid in self._session_members():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            p.wait(timeout=10)
        self.procs.clear()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
