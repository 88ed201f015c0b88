"""Rounds on the Ray backend equal rounds on the local one: same picks, same database.

A vectors pool (its features read from the vector store by Ray tasks on the real three-node
cluster), the simulated annotator, several strategies. Everything but the execution backend is
the same, so the snapshots of the two databases must be equal.
"""

from __future__ import annotations

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
        strategy={"name": strategy},
        loop={"initial_size": 20, "batch_size": 25, "max_rounds": 3},
        execution={"shard_rows": 256, **execution},  # several shards per scoring step
    ))
    try:
        Controller(ws).run()
        return snapshot(str(ws.engine.url))
    finally:
        ws.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ray_rounds_pick_what_local_rounds_pick(ray_cluster, tmp_path, strategy):
    local = _run(tmp_path / "local", strategy, {"backend": "local"})
    ray = _run(tmp_path / "ray", strategy, {"backend": "ray", "address": ray_cluster.address})
    assert local["rounds"] == ray["rounds"] and len(local["rounds"]) == 3
    assert len(local["selections"]) == 20 + 2 * 25
    assert ray == local
