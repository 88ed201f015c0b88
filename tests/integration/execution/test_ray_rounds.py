"""Rounds on the Ray backend equal rounds on the local one: same picks, same database.

A vectors pool (its features read from the vector store by Ray tasks on the real three-node
cluster), the simulated annotator, several strategies. Everything but the execution backend is
the same, so the snapshots of the two databases must be equal. On Ray, coreset and pcoreset run
the exact greedy on shards held by actors (several: ``shard_rows`` is small); locally, the kernel
in process.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from alloop.loop.controller import Controller
from tests.conftest import open_workspace, write_project
from tests.integration.snapshot import snapshot

STRATEGIES = ["random", "margin", "entropy", "coreset", "pcoreset", "ideal"]


def _pool(folder: Path) -> None:
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((4, 8)) * 2
    y = rng.integers(0, 4, 1500)
    X = (centres[y] + rng.standard_normal((1500, 8))).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors.npy", X)
    np.save(folder / "labels.npy", np.array([f"c{v}" for v in y]))


def _run(folder: Path, strategy: str, execution: dict) -> dict:
    _pool(folder)
    ws = open_workspace(write_project(
        folder,
        pool={"source": {"type": "vectors", "path": str(folder / "vectors.npy"),
                         "labels_path": str(folder / "labels.npy")}, "test_fraction": 0.2},
        features={"name": "vector"},
        learner={"name": "sklearn", "params": {"scale": True}},
        strategy={"name": strategy, "params": {"shard_rows": 256}} if strategy == "ideal" else {"name": strategy},
        loop={"initial_size": 20, "batch_size": 25, "max_rounds": 3},
        execution={"shard_rows": 256, **execution},  # several shards per scoring step
    ))
    try:
        Controller(ws).run()
        return snapshot(str(ws.engine.url))
    finally:
        ws.close()


def _sharded_runs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "alloop.strategies.kcenter_sharded"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ray_rounds_pick_what_local_rounds_pick(ray_cluster, tmp_path, strategy, caplog):
    caplog.set_level(logging.INFO, logger="alloop.strategies.kcenter_sharded")
    local = _run(tmp_path / "local", strategy, {"backend": "local"})
    assert not _sharded_runs(caplog)
    ray = _run(tmp_path / "ray", strategy, {"backend": "ray", "address": ray_cluster.address})
    if strategy in ("coreset", "pcoreset"):  # rounds 1 and 2 selected on 3 actors' shards
        assert _sharded_runs(caplog) == ["k-center greedy, exact on 3 shard(s) of at most 512 rows (ray backend)"] * 2
    assert local["rounds"] == ray["rounds"] and len(local["rounds"]) == 3
    assert len(local["selections"]) == 20 + 2 * 25
    assert ray == local


def test_a_worker_killed_while_scoring_is_retried_and_the_round_picks_the_same(ray_cluster, tmp_path, monkeypatch):
    """SIGKILL the Ray worker scoring a shard of round 1: Ray retries it, the run equals the local one."""
    import os
    import signal
    import threading

    from alloop.workspace import Workspace
    from tests.helpers.ray_tasks import PID_FILE, KillOnceLearner

    local = _run(tmp_path / "local", "margin", {"backend": "local"})
    handshake = tmp_path / "handshake"
    handshake.mkdir()
    new_learner = Workspace.new_learner
    monkeypatch.setattr(Workspace, "new_learner", lambda self, project=None: KillOnceLearner(
        new_learner(self, project), str(handshake), os.getpid()))
    killed: list[int] = []

    def kill() -> None:  # wait for the victim's pid (a handshake, not a timer), kill it, say so
        pid_file = handshake / PID_FILE
        for _ in range(2400):
            if pid_file.exists() and pid_file.read_text():
                killed.append(int(pid_file.read_text()))
                os.kill(killed[0], signal.SIGKILL)
                (handshake / "killed").touch()
                return
            threading.Event().wait(0.05)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    ray = _run(tmp_path / "ray", "margin", {"backend": "ray", "address": ray_cluster.address, "max_retries": 2})
    killer.join(timeout=30)
    assert killed and (handshake / "retried").exists()  # the first attempt died; a retry scored the shard
    assert ray == local


def test_a_million_row_pool_imports_and_runs_a_round_alike_on_both_backends(ray_cluster, tmp_path):
    """10^6 vectors (d = 4): bulk import, round 0 (100 random) and round 1 (margin, 1,000 picks) on
    each backend; the databases are identical."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((5, 4)) * 3
    y = rng.integers(0, 5, 1_000_000)
    X = (centres[y] + rng.standard_normal((y.size, 4))).astype(np.float32)
    snaps = []
    for backend in ({"backend": "local"}, {"backend": "ray", "address": ray_cluster.address}):
        folder = tmp_path / backend["backend"]
        folder.mkdir()
        np.save(folder / "vectors.npy", X)
        np.save(folder / "labels.npy", np.array([f"c{v}" for v in y]))
        ws = open_workspace(write_project(
            folder,
            pool={"source": {"type": "vectors", "path": str(folder / "vectors.npy"),
                             "labels_path": str(folder / "labels.npy")}},
            features={"name": "vector"},
            learner={"name": "sklearn", "params": {"scale": True}},
            loop={"initial_size": 100, "batch_size": 1000, "max_rounds": 2, "save_models": False},
            execution=backend,
        ))
        try:
            Controller(ws).run()
            snaps.append(snapshot(str(ws.engine.url)))
        finally:
            ws.close()
    assert [r[:2] for r in snaps[0]["rounds"]] == [(0, "CLOSED"), (1, "CLOSED")]
    assert len(snaps[0]["selections"]) == 1100 and len(snaps[0]["annotations"]) == 1100
    assert snaps[0] == snaps[1]
