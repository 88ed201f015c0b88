"""Real datasets bundled with scikit-learn, as pool sources (no network needed).

``digits`` (1,797 handwritten digits, 8x8) is written as real PNG files under
``<work_dir>/pool/digits/<label>/<index:04d>.png`` and then scanned like any folder of images,
so it exercises the same code path as a user's images. ``iris``, ``wine`` and ``breast_cancer``
are tabular and go through the vectors source logic.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from alloop.config import BundledSource, FolderSource
from alloop.errors import ConfigError
from alloop.files import atomic_write
from alloop.pool.base import RowKeys, ScanResult, VectorScan
from alloop.pool.images import scan_folder
from alloop.pool.vectors import scan_matrix
from alloop.progress import NULL_PROGRESS, Progress

logger = logging.getLogger(__name__)

__all__ = ["BUNDLED", "digits_pixels", "scan_bundled", "write_digits"]

_TABULAR = {"iris": "load_iris", "wine": "load_wine", "breast_cancer": "load_breast_cancer"}
#: Names of the bundled datasets.
BUNDLED = ("digits", *_TABULAR)


def digits_pixels() -> tuple[np.ndarray, np.ndarray]:
    """The scikit-learn digits as uint8 images and their targets.

    Returns
    -------
    images : ndarray of shape (1797, 8, 8), uint8
        ``round(v * 255 / 16)`` of the original 0..16 values (round half to even).
    target : ndarray of shape (1797,), int
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)
    return images, np.asarray(digits.target)


def _png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _same_png(path: Path, png: bytes, pixels: np.ndarray) -> bool:
    """Whether ``path`` already holds these pixels (same bytes, or same decoded image)."""
    from PIL import Image

    try:
        existing = path.read_bytes()
        if existing == png:
            return True
        with Image.open(io.BytesIO(existing)) as img:
            img.load()
            return img.mode == "L" and np.array_equal(np.asarray(img), pixels)
    except (OSError, ValueError, SyntaxError, EOFError):
        return False


def write_digits(work_dir: Path, progress: Progress = NULL_PROGRESS) -> Path:
    """Write the digits as 8x8 grayscale PNGs; files that already hold the right pixels are kept.

    Returns
    -------
    Path
        ``<work_dir>/pool/digits``; image ``i`` is ``<label>/<i:04d>.png`` below it.
    """
    images, target = digits_pixels()
    root = Path(work_dir) / "pool" / "digits"
    written = 0
    with progress.task("Writing digits images", total=len(images)) as bar:
        for i, (pixels, label) in enumerate(zip(images, target)):
            path = root / str(int(label)) / f"{i:04d}.png"
            png = _png_bytes(pixels)
            if not (path.is_file() and _same_png(path, png, pixels)):
                atomic_write(path, png)
                written += 1
            bar.advance()
    logger.info("Digits images in %s: %d written, %d already there", root, written, len(images) - written)
    return root


def scan_bundled(
    source: BundledSource, work_dir: Path, progress: Progress = NULL_PROGRESS
) -> ScanResult | VectorScan:
    """Scan a bundled scikit-learn dataset.

    Parameters
    ----------
    source : BundledSource
        ``name``: ``"digits"``, ``"iris"``, ``"wine"`` or ``"breast_cancer"``.
    work_dir : Path
        Digits PNGs go to ``<work_dir>/pool/digits``; tabular matrices to
        ``<work_dir>/pool/vectors-<hash>.npy``.
    progress : Progress

    Returns
    -------
    ScanResult or VectorScan
        digits (ScanResult): image items keyed ``"<label>/<index:04d>.png"``, ``label_names`` ``"0"``..``"9"``.
        tabular (VectorScan): vector rows keyed ``"<name>-000123"`` (row order of scikit-learn), labels and
        ``label_names`` from the dataset's ``target_names``.
    """
    name = source.name
    if name == "digits":
        root = write_digits(work_dir, progress)
        folder = FolderSource(path=root, labels_from_subfolders=True, extensions=(".png",))
        result = scan_folder(folder, work_dir, progress)
        result.label_names = [str(i) for i in range(10)]
        return result
    if name not in _TABULAR:
        raise ConfigError(
            f"Unknown bundled dataset {name!r}. Choose one of: {', '.join(BUNDLED)} "
            "(`name` in [pool.source] of alloop.toml)."
        )
    import sklearn.datasets

    data = getattr(sklearn.datasets, _TABULAR[name])()
    names = [str(n) for n in data.target_names]
    labels = [names[int(t)] for t in data.target]
    keys = RowKeys(name, len(labels))
    return scan_matrix(data.data, keys, labels, work_dir, label_names=names, progress=progress)
