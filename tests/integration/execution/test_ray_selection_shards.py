"""IDEAL's neighbour graph and OFDS's k-means per shard on the real three-node Ray cluster: the
same graph, centres and picks as on the local backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from alloop.config import ExecutionConfig
from alloop.execution import LocalBackend, open_backend
from alloop.execution.ray_backend import RayBackend
from alloop.strategies._class_kmeans import _kmeans_pp, _sq_norms, lloyd
from alloop.strategies._influence_graph import knn_graph
from alloop.strategies._knn_shards import ShardedKnn, seals_subset
from alloop.strategies.ideal import ideal_select
from alloop.strategies.ofds import ofds_select
from tests.helpers.graphs import blobs as _blobs
from tests.helpers.graphs import same_graph
from tests.unit.strategies.test_ofds import make_objects


@pytest.fixture(scope="module")
def backend(ray_cluster, tmp_path_factory) -> Iterator[RayBackend]:
    work_dir: Path = tmp_path_factory.mktemp("ray-shards")
    b = open_backend(ExecutionConfig(backend="ray", address=ray_cluster.address), work_dir=work_dir)
    assert isinstance(b, RayBackend)
    with b:
        yield b


def blobs(n: int, d: int = 24, seed: int = 0) -> np.ndarray:
    return _blobs(n, d, seed, clusters=10)


def test_exact_graph_built_on_ray_equals_the_single_process_graph(backend):
    X = blobs(3000)
    with ShardedKnn(X, 10, neighbors="exact", backend=backend, shard_rows=400) as knn:
        G = knn.graph()
    assert same_graph(G, knn_graph(X, 10, neighbors="exact"))


@pytest.mark.parametrize("method", ["faiss-ivf", "faiss-exact"])
def test_faiss_graph_built_on_ray_equals_the_local_backend_graph(backend, method):
    X = blobs(6000, seed=1)
    graphs = []
    for b in (backend, LocalBackend()):
        with ShardedKnn(X, 10, neighbors=method, nprobe=4, backend=b, shard_rows=1500) as knn:
            graphs.append(knn.graph())
    assert same_graph(*graphs)
    if method == "faiss-ivf":  # the same index searched in one piece: the same graph
        assert same_graph(graphs[0], knn_graph(X, 10, neighbors=method, nprobe=4))


def test_ideal_picks_on_ray_equal_local_picks_whole_graph_and_seals(backend):
    X = blobs(2500, seed=2)
    labeled = np.arange(0, 2500, 113)
    cand = np.setdiff1d(np.arange(2500), labeled)
    for kw in ({"neighbors": "exact"}, {"neighbors": "exact", "subset": "seals", "subset_rows": 600},
               {"neighbors": "faiss-ivf", "subset": "seals", "subset_rows": 600}):
        picks = [ideal_select(X, 15, rng=np.random.default_rng(3), labeled=labeled, candidates=cand, runs=5,
                              backend=b, shard_rows=300, **kw) for b in (backend, LocalBackend(), None)]
        assert np.array_equal(picks[0][0], picks[1][0]) and np.array_equal(picks[0][1], picks[1][1])
        assert np.array_equal(picks[0][0], picks[2][0])  # no backend: in process, the same picks


def test_seals_subset_on_ray_equals_local(backend):
    X = blobs(4000, seed=4)
    out = []
    for b in (backend, LocalBackend()):
        with ShardedKnn(X, 10, neighbors="faiss-ivf", backend=b, shard_rows=200) as knn:
            out.append(seals_subset(knn, np.array([5, 77, 3999]), 500))
    assert np.array_equal(out[0][0], out[1][0]) and same_graph(out[0][1], out[1][1])


def test_lloyd_on_ray_equals_local_and_ofds_picks_are_the_same(backend):
    X = blobs(5000, d=16, seed=5)
    C0 = _kmeans_pp(X, _sq_norms(X), np.empty((0, 16), np.float32), 12, 12, np.random.default_rng(1))
    fits = [lloyd(b.share(X), C0, max_iter=50, backend=b, shard_rows=700) for b in (backend, LocalBackend())]
    assert np.array_equal(fits[0][0], fits[1][0]) and np.array_equal(fits[0][1], fits[1][1])
    assert fits[0][2] == fits[1][2]
    objects = make_objects(6, n_images=500)
    picks = [ofds_select(objects, 40, n_samples=500, rng=9, shard_objects=60, backend=b)
             for b in (backend, LocalBackend())]
    assert np.array_equal(picks[0][0], picks[1][0]) and np.array_equal(picks[0][1], picks[1][1])
