"""Pick the scanner of a pool source by its ``type``.

Each scanner reads its input and returns a :class:`~alloop.pool.base.ScanResult` (or, for
vectors, a columnar :class:`~alloop.pool.base.VectorScan`); none of
them touches the database (:func:`alloop.pool.importer.import_pool` writes the result).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

from alloop.errors import ConfigError
from alloop.pool.base import Scan
from alloop.progress import NULL_PROGRESS, Progress

__all__ = ["SCANNERS", "scan_source"]

#: source ``type`` -> "module:function" of its scanner (imported on first use).
SCANNERS: dict[str, str] = {
    "folder": "alloop.pool.images:scan_folder",
    "texts": "alloop.pool.texts:scan_texts",
    "vectors": "alloop.pool.vectors:scan_vectors",
    "bundled": "alloop.pool.bundled:scan_bundled",
}


def _scanner(kind: str) -> Callable[..., Scan]:
    module, func = SCANNERS[kind].split(":")
    return getattr(import_module(module), func)


def scan_source(source: Any, work_dir: Path, progress: Progress = NULL_PROGRESS, *, wait: bool = True) -> Scan:
    """Scan ``source`` with the scanner of its ``type``.

    Parameters
    ----------
    source : FolderSource, TextSource, VectorSource or BundledSource
        The ``[pool.source]`` section of the project file.
    work_dir : Path
        The project's work directory (vector matrices and bundled images are written below it).
    progress : Progress
    wait : bool
        False: a vector source may return while its matrix is still being copied
        (:func:`~alloop.pool.vectors.scan_vectors`); :func:`~alloop.pool.importer.import_pool`
        waits for it before it commits.

    Returns
    -------
    ScanResult or VectorScan
        Vector sources (and the bundled tabular sets) scan into columns (:class:`VectorScan`).

    Raises
    ------
    ConfigError
        If ``source.type`` is not a known source type.
    PoolImportError
        If the source cannot be imported (see each scanner).
    """
    kind = getattr(source, "type", None)
    if kind not in SCANNERS:
        raise ConfigError(
            f"Unknown pool source type {kind!r}. Known types: {', '.join(SCANNERS)} "
            "(`type` in [pool.source] of alloop.toml)."
        )
    if kind == "vectors" and not wait:
        return _scanner(kind)(source, Path(work_dir), progress, wait=False)
    return _scanner(kind)(source, Path(work_dir), progress)
