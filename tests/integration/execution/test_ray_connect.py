"""Connecting: an unreachable address fails fast with the address in the message and writes
nothing; Ray Client (ray://) reaches the test cluster; address unset starts a private local
cluster on loopback without touching ~/.ray."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from alloop.config import ExecutionConfig
from alloop.errors import ConfigError, ExecutionUnavailableError
from alloop.execution import _ray_connect, open_backend
from alloop.features.cache import FeatureCache
from alloop.features.hashing import HashingTextEncoder
from alloop.protocols import SampleRef
from tests.helpers import ray_tasks
from tests.helpers.ray_cluster import ROOT, free_port

from .conftest import require_ray


@pytest.fixture
def listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP server on loopback that is not Ray: it answers ``reply`` (set by the test) or stays silent."""
    server = socket.create_server(("127.0.0.1", 0))
    reply: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        conns = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            if reply:
                conn.sendall(reply[0].encode())
                conn.close()
            else:
                conns.append(conn)  # silent: keep it open, answer nothing
        for c in conns:
            c.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], reply
    stop.set()
    thread.join()
    server.close()


def _fails_fast(address: str, work_dir: Path, match: str, within: float = 5.0) -> None:
    require_ray()
    start = time.monotonic()
    with pytest.raises(ExecutionUnavailableError, match=match) as err:
        open_backend(ExecutionConfig(backend="ray", address=address), work_dir=work_dir)
    assert time.monotonic() - start < within
    assert address in str(err.value) and "[execution] address" in str(err.value)
    assert list(work_dir.iterdir()) == []  # nothing written


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_closed_port_fails_at_once(tmp_path, scheme):
    _fails_fast(f"{scheme}127.0.0.1:{free_port()}", tmp_path, "refused the connection")


def test_another_service_on_the_port_is_named_as_such(tmp_path, listener):
    port, reply = listener
    reply.append("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    _fails_fast(f"127.0.0.1:{port}", tmp_path, "did not answer as a Ray head")


def test_a_silent_server_is_given_up_on_after_the_timeout(tmp_path, listener, monkeypatch):
    port, _ = listener
    monkeypatch.setattr(_ray_connect, "CONNECT_TIMEOUT_S", 1.0)
    _fails_fast(f"ray://127.0.0.1:{port}", tmp_path, "within 1 s", within=3.0)


def test_unknown_host_and_bad_forms(tmp_path, monkeypatch):
    monkeypatch.setattr(_ray_connect, "CONNECT_TIMEOUT_S", 2.0)  # a resolver without DNS may only time out
    _fails_fast("no-such-host.invalid:6379", tmp_path, "(unknown|could not resolve) host 'no-such-host.invalid'",
                within=4.0)
    for bad in ("http://head:8265", "head", "head:port", "ray://head"):
        with pytest.raises(ConfigError, match="expected \"auto\", \"ray://<host>:<port>\""):
            open_backend(ExecutionConfig(backend="ray", address=bad))


def test_ray_client_address_runs_tasks_and_encodes(ray_cluster, tmp_path):
    """Over Ray Client, Ray Data cannot run (Ray 2.60): encoding goes through plain tasks."""
    import ray

    assert not ray.is_initialized()  # the other module's connection is closed
    texts = [SampleRef(f"t{i}", "text", f"{i:04x}", {"text": f"text {i}"} if i != 4 else {}, tmp_path)
             for i in range(50)]
    encoder = HashingTextEncoder(n_features=32)
    expected = FeatureCache(tmp_path / "local", batch_size=8).get(texts, encoder)
    with open_backend(ExecutionConfig(backend="ray", address=ray_cluster.client_address), work_dir=tmp_path) as b:
        assert b.owned and b.client and b.workers == 3
        got = b.map_shards(ray_tasks.square_sum, [1, 2, 3], shared=np.arange(4), what="client")
        X, failures = FeatureCache(tmp_path / "ray", batch_size=8, backend=b).get(texts, encoder)
    assert got == [7, 10, 15] and not ray.is_initialized()
    np.testing.assert_array_equal(X, expected[0])
    assert failures == expected[1] and list(failures) == ["t4"]


def test_auto_finds_the_cluster_in_ray_address(ray_cluster, tmp_path, monkeypatch):
    """What a Ray job's driver sees: RAY_ADDRESS names the cluster it runs in."""
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    assert _ray_connect.parse_address("auto") == _ray_connect.Target("auto", "gcs", "127.0.0.1", ray_cluster.port)
    with open_backend(ExecutionConfig(backend="ray", address="auto"), work_dir=tmp_path) as b:
        assert b.owned and not b.client and b.workers == 3


def test_no_address_starts_a_private_cluster_on_loopback(tmp_path):
    """In a fresh process (one Ray per process) with HOME in tmp_path: nothing lands in ~/.ray."""
    require_ray()
    script = (
        "import json, ray\n"
        "from alloop.config import ExecutionConfig\n"
        "from alloop.execution import open_backend\n"
        "from tests.helpers import ray_tasks\n"
        f"with open_backend(ExecutionConfig(backend='ray'), work_dir={str(tmp_path)!r}) as b:\n"
        "    out = {'owned': b.owned, 'got': b.map_shards(ray_tasks.square_sum, [2, 3], 1, what='x'),\n"
        "           'gcs': ray.get_runtime_context().gcs_address,\n"
        "           'nodes': [n['NodeManagerAddress'] for n in ray.nodes()]}\n"
        "out['after'] = ray.is_initialized()\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's session folder (short: socket paths)
    env.update(HOME=str(tmp_path), RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=ray_tmp, PYTHONPATH=str(ROOT))
    try:
        done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=180)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"owned": True, "got": [5, 10], "gcs": out["gcs"], "nodes": ["127.0.0.1"], "after": False}
    assert out["gcs"].startswith("127.0.0.1:")
    assert not (tmp_path / ".ray").exists()  # no auth token written for a private loopback cluster


def test_connecting_warms_one_worker_per_cpu(ray_cluster, tmp_path):
    """connect() has alloop's scoring modules imported in one worker per CPU of every node."""
    with open_backend(ExecutionConfig(backend="ray", address=ray_cluster.address), work_dir=tmp_path) as b:
        refs = b._warming
        assert len(refs) == b.workers  # the cluster's CPUs: one per worker node here
        _, pending = b._ray.wait(refs, num_returns=len(refs), timeout=0)
        assert not pending  # connect() returned once the imports had run (within its 120 s bound)
        pids = b._ray.get(refs, timeout=300)
        assert all(isinstance(p, int) and p > 0 for p in pids)
        again = b._ray.get(_ray_connect.warm_up(b._ray, ("alloop.loop.score", "no_such_module_here")), timeout=300)
        assert len(again) == b.workers  # a module missing on a node is left to the real task to report
