"""The exact sharded k-center greedy on the real three-node Ray cluster: the kernel's picks and
scores bit for bit, with the pool memory-mapped from the work dir (each actor maps its rows) or
sent through the object store; a shard actor killed mid-selection is an ExecutionError."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from alloop.config import ExecutionConfig
from alloop.errors import ExecutionError
from alloop.execution import open_backend
from alloop.execution.ray_backend import RayBackend
from alloop.strategies import kcenter_sharded
from alloop.strategies.kcenter import k_center_greedy
from alloop.strategies.kcenter_sharded import k_center_composable, k_center_greedy_sharded
from tests.helpers import ray_tasks


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kcenter-work")


@pytest.fixture(scope="module")
def backend(ray_cluster, work_dir) -> Iterator[RayBackend]:
    b = open_backend(ExecutionConfig(backend="ray", address=ray_cluster.address, max_retries=1, shard_rows=256),
                     work_dir=work_dir)
    assert isinstance(b, RayBackend) and b.workers == 3
    with b:
        yield b


def _pool(work_dir: Path, n: int = 5000, d: int = 19) -> np.ndarray:
    path = work_dir / "pool.npy"
    if not path.exists():
        rng = np.random.default_rng(4)
        X = (rng.standard_normal((6, d)) * 3)[rng.integers(0, 6, n)] + rng.standard_normal((n, d))
        X[::11] = X[5]  # exact duplicates across the shards
        np.save(path, X.astype(np.float32))
    return np.load(path, mmap_mode="r")


def _same(ref, got) -> None:
    assert np.array_equal(ref[0], got[0])
    assert np.array_equal(ref[1].view(np.int64), got[1].view(np.int64))


CASES = [
    dict(init=np.arange(0, 5000, 97), metric="euclidean"),
    dict(init=np.arange(0, 5000, 97), metric="cosine"),
    dict(init=None, metric="cosine"),
    dict(init=[3, 4000], candidates=np.arange(0, 5000, 3), metric="euclidean"),  # the compact copy
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_ray_shards_read_the_memory_mapped_pool_and_pick_what_the_kernel_picks(backend, work_dir, case):
    X = _pool(work_dir)
    assert backend.share(X).path == str(work_dir / "pool.npy")  # the path route: each actor maps the file
    kw = CASES[case]
    got = k_center_greedy_sharded(X, 120, **kw, backend=backend, shard_rows=backend.shard_rows,
                                  max_shards=backend.workers)
    _same(k_center_greedy(X, 120, **kw), got)


def test_ray_shards_get_an_in_memory_pool_from_the_object_store(backend):
    X = np.random.default_rng(8).standard_normal((3000, 33)).astype(np.float32)
    assert backend.share(X).path is None
    for init in (np.arange(10), None):
        _same(k_center_greedy(X, 80, init=init),
              k_center_greedy_sharded(X, 80, init=init, backend=backend, shard_rows=256, max_shards=3))


def test_composable_on_ray_equals_composable_locally(backend, work_dir):
    X = _pool(work_dir)
    local = k_center_composable(X, 40, init=np.arange(10), shard_rows=1200)
    _same(local, k_center_composable(X, 40, init=np.arange(10), shard_rows=1200, backend=backend))


def test_a_shard_actor_killed_mid_selection_is_an_execution_error(backend, work_dir, monkeypatch):
    """Shard 1's actor blocks at its 5th pick and publishes its pid; the test SIGKILLs it: the
    selection raises ExecutionError naming the shard and the call, and the cluster serves the next."""
    X = _pool(work_dir)
    handshake = work_dir / "handshake"
    handshake.mkdir()
    monkeypatch.setattr(kcenter_sharded, "_KShard", ray_tasks.KillAtStepShard)
    killed: list[int] = []

    def kill() -> None:  # a handshake: wait for the victim's pid, kill it, then say so
        pid_file = handshake / ray_tasks.PID_FILE
        for _ in range(2400):
            if pid_file.exists() and pid_file.read_text():
                killed.append(int(pid_file.read_text()))
                os.kill(killed[0], signal.SIGKILL)
                break
            threading.Event().wait(0.05)
        (handshake / "killed").touch()

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    with pytest.raises(ExecutionError, match=r"shard 1 of 3 died in KillAtStepShard\.step"):
        k_center_greedy_sharded(X, 50, init=[0], backend=backend, shard_rows=256, max_shards=3)
    killer.join(timeout=30)
    assert killed
    monkeypatch.undo()
    _same(k_center_greedy(X, 20, init=[0]),
          k_center_greedy_sharded(X, 20, init=[0], backend=backend, shard_rows=256, max_shards=3))
