"""A real Ray cluster for the execution tests: a head and two worker nodes, separate processes.

Started once for this package and stopped after its last test. There is no skip: without Ray
(the ``ray`` extra, which ``make setup`` installs) these tests fail and say so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.helpers.ray_cluster import ENV, RayCluster


def require_ray() -> None:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"Ray is not installed ({exc}): run `make setup` (it installs the `ray` extra) or "
                    "pip install -e '.[test,ray]'.")


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[RayCluster]:
    require_ray()
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)  # this process is a driver of the cluster: the same settings as its nodes
    cluster = RayCluster(workers=2, cpus=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
