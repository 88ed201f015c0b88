"""Execution backends: where a round's per-shard work runs (``[execution]`` in alloop.toml).

::

    with open_backend(config.execution, work_dir=ws.work_dir) as backend:
        scores = backend.map_shards(score_shard, shards, shared=model, what="Scoring the pool")
        feats, failures = FeatureCache(root, backend=backend).get(samples, encoder)

``local`` (the default) runs a plain loop in this process. ``ray`` runs Ray tasks for
:meth:`Backend.map_shards` and Ray Data (an actor pool) for encoding, on the cluster named by
``[execution] address``. Work functions read the pool's memory-mapped files themselves: on a
cluster the work dir must lie on storage every node mounts at the same path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alloop.execution.base import Backend, EncodedBatch, ShardGroup, encode_batch
from alloop.execution.local import LocalBackend
from alloop.execution.shared import SharedArray

if TYPE_CHECKING:
    from alloop.config import ExecutionConfig

__all__ = ["Backend", "EncodedBatch", "LocalBackend", "ShardGroup", "SharedArray", "encode_batch", "open_backend"]


def open_backend(config: ExecutionConfig | None, *, work_dir: Path | str | None = None) -> Backend:
    """The backend ``config`` names, connected and ready.

    Parameters
    ----------
    config : ExecutionConfig or None
        ``[execution]`` of the project file; None means local.
    work_dir : Path, optional
        The project's work dir. On Ray, every node is checked to see it (the same files at the
        same path) before any work runs.

    Raises
    ------
    ConfigError
        ``backend = "ray"`` but Ray is not installed (``pip install 'alloop[ray]'``).
    ExecutionUnavailableError
        The cluster at ``address`` cannot be reached (within a bounded time; nothing was run
        or written).
    ExecutionError
        A node of the cluster cannot read the work dir.
    """
    if config is None:
        return LocalBackend()
    if config.backend == "local":
        return LocalBackend(shard_rows=config.shard_rows)
    from alloop.execution.ray_backend import RayBackend

    return RayBackend.connect(config, work_dir=None if work_dir is None else Path(work_dir))
