"""The Ray backend against a real three-node cluster: same results as local, failures handled.

One connection serves the module (``ray.init`` once per process). Kills are coordinated by a
file handshake (``tests/helpers/ray_tasks.py``): the victim publishes its pid and blocks, the
test kills it and only then lets it go, so a retry is certain and never timed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from alloop.config import ExecutionConfig
from alloop.errors import ConfigError, ExecutionError
from alloop.execution import LocalBackend, open_backend
from alloop.execution.ray_backend import RayBackend
from alloop.features.cache import FeatureCache
from alloop.features.hashing import HashingTextEncoder
from alloop.protocols import SampleRef
from tests.helpers import ray_tasks
from tests.helpers.progress import RecordingProgress


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray-work")


@pytest.fixture(scope="module")
def backend(ray_cluster, work_dir) -> Iterator[RayBackend]:
    b = open_backend(ExecutionConfig(backend="ray", address=ray_cluster.address, max_retries=2), work_dir=work_dir)
    assert isinstance(b, RayBackend) and b.workers == 3
    with b:
        yield b
    assert not list(work_dir.glob(".alloop-node-check-*"))  # the shared-storage probe cleaned up


def _shards(work_dir: Path, n: int = 4000, dim: int = 16, rows: int = 500) -> list[tuple[str, int, int]]:
    path = work_dir / "pool.npy"
    if not path.exists():
        np.save(path, np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32))
    return [(str(path), start, min(start + rows, n)) for start in range(0, n, rows)]


def _kill_when_published(folder: Path, timeout: float = 120) -> threading.Thread:
    """Wait (in a thread) for the victim's pid, SIGKILL it, then write ``killed``."""
    def kill() -> None:
        deadline = time.monotonic() + timeout
        pid_file = folder / ray_tasks.PID_FILE
        try:
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.02)  # a handshake poll: the measured thing is the retry, not a delay
            if pid_file.exists():
                killed.append(int(pid_file.read_text()))
                os.kill(killed[0], signal.SIGKILL)
        finally:
            (folder / "killed").touch()

    killed: list[int] = []
    thread = threading.Thread(target=kill, daemon=True)
    thread.killed = killed  # type: ignore[attr-defined]
    thread.start()
    return thread


# --- map_shards ---------------------------------------------------------------------------------
def test_map_shards_matches_local_and_puts_the_shared_object_once(backend, work_dir):
    shards = _shards(work_dir)
    weights = np.linspace(-1, 1, 16).astype(np.float32)
    ray_tasks.CountingShared.pickled = 0
    local = LocalBackend().map_shards(ray_tasks.shard_stats, shards, ray_tasks.CountingShared(weights), what="stats")
    assert ray_tasks.CountingShared.pickled == 0  # local: a plain loop, nothing pickled

    progress = RecordingProgress()
    remote = backend.map_shards(ray_tasks.shard_stats, shards, ray_tasks.CountingShared(weights),
                                what="Scoring the pool", progress=progress)
    assert ray_tasks.CountingShared.pickled == 1  # one ray.put for 8 tasks
    assert remote == local and len(remote) == 8
    assert [r["top"][0] // 500 for r in remote] == list(range(8))  # shard order, not completion order
    assert progress.tasks == [["Scoring the pool", 8, 8]]


def test_an_application_error_surfaces_with_its_message_and_is_not_retried(backend, tmp_path):
    with pytest.raises(ValueError, match="shard 3 is bad: made to fail"):
        backend.map_shards(ray_tasks.fail_on, list(range(6)), {"bad": 3, "attempts": str(tmp_path)}, what="x")
    assert len(list(tmp_path.glob("3-*"))) == 1  # ran once: application errors are not retried


def test_a_worker_dying_on_every_attempt_fails_after_max_retries(backend, tmp_path):
    with pytest.raises(ExecutionError, match=r"Scoring: Ray could not run shard 1 of 3 \(die_on\): .*max_retries = 2"):
        backend.map_shards(ray_tasks.die_on, [0, 1, 2], {"bad": 1, "attempts": str(tmp_path)}, what="Scoring")
    assert len(list(tmp_path.glob("1-*"))) == 3  # the first attempt and max_retries = 2 retries


def test_a_killed_worker_is_retried_and_the_results_are_identical(backend, work_dir, tmp_path):
    shards = _shards(work_dir)
    shared = {"weights": np.linspace(1, -1, 16).astype(np.float32), "victim_start": 1500, "handshake": str(tmp_path)}
    expected = LocalBackend().map_shards(ray_tasks.shard_stats, shards, shared, what="stats")
    killer = _kill_when_published(tmp_path)
    got = backend.map_shards(ray_tasks.shard_stats_kill_once, shards, shared, what="stats")
    killer.join(timeout=30)
    assert killer.killed and (tmp_path / "retried").exists()  # the first attempt died, a retry ran
    assert got == expected


# --- encoding on Ray Data -----------------------------------------------------------------------
def _texts(work_dir: Path, n: int = 240, bad: int = 7) -> list[SampleRef]:
    return [SampleRef(f"t{i}", "text", f"{i:08x}",
                      {"text": f"review {i}: {'good' if i % 3 else 'bad'} film, {i % 11} stars"} if i != bad
                      else {"txt": "no text field"}, work_dir)
            for i in range(n)]


def test_encoding_survives_a_killed_actor_with_identical_features_and_quarantine(backend, work_dir, tmp_path):
    samples, encoder = _texts(work_dir), HashingTextEncoder(n_features=128)
    local_cache = FeatureCache(tmp_path / "local", chunk_rows=64, batch_size=32)
    X_local, bad_local = local_cache.get(samples, encoder)

    killer = _kill_when_published(tmp_path)
    ray_cache = FeatureCache(tmp_path / "ray", chunk_rows=64, batch_size=32, backend=backend)
    X_ray, bad_ray = ray_cache.get(samples, ray_tasks.KillOnceEncoder(encoder, str(tmp_path), victim="t100"))
    killer.join(timeout=30)
    assert killer.killed and (tmp_path / "retried").exists()

    assert bad_ray == bad_local == {"t7": "expected data {'text': <str>}, got {'txt': 'no text field'}"}
    np.testing.assert_array_equal(X_ray, X_local)
    assert X_ray.shape == (239, 128) and ray_cache.encoded_count == local_cache.encoded_count == 240
    # the same cache: one folder per fingerprint, readable by a local cache without encoding again
    assert [p.name for p in (tmp_path / "ray").iterdir()] == [encoder.fingerprint()]
    reread = FeatureCache(tmp_path / "ray")
    X_again, _ = reread.get([s for s in samples if s.key != "t7"], encoder)
    assert reread.encoded_count == 0
    np.testing.assert_array_equal(X_again, X_local)


def test_an_encoder_error_surfaces_as_itself(backend, work_dir, tmp_path):
    image = SampleRef("img-1", "image", "ab" * 8, {"path": "x.png"}, work_dir)
    with pytest.raises(ConfigError, match="The 'hashing' encoder reads text samples, but sample 'img-1'"):
        FeatureCache(tmp_path, backend=backend).get([image], HashingTextEncoder())
