"""Fashion-MNIST (Zalando, 70,000 28x28 grayscale images, 10 classes) from local IDX files.

The files come from the Debian package ``dataset-fashion-mnist`` (no network needed)::

    sudo apt-get install dataset-fashion-mnist     # -> /usr/share/datasets/fashion-mnist/

Another folder holding the four ``*-idx?-ubyte.gz`` files can be given with the environment
variable ``FASHION_MNIST_DIR`` or the ``folder`` argument.

    >>> images, labels = load_fashion_mnist("train")   # (60000, 28, 28) uint8, (60000,) int64
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Literal

import numpy as np

from alloop.pool.synthetic_detection import read_idx

__all__ = ["CLASS_NAMES", "find_folder", "load_fashion_mnist", "read_idx"]

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
SIZES = {"train": 60000, "test": 10000}


def _from_dpkg() -> Path | None:
    """The folder ``dpkg -L dataset-fashion-mnist`` lists the image files in, if any."""
    if shutil.which("dpkg") is None:
        return None
    done = subprocess.run(["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.endswith(FILES["train"][0]):
            return Path(line).parent
    return None


def find_folder(folder: str | Path | None = None) -> Path:
    """The folder holding the four IDX gz files.

    Order: ``folder``, ``$FASHION_MNIST_DIR``, :data:`DEFAULT_FOLDER`, what dpkg lists.

    Raises
    ------
    FileNotFoundError
        No candidate holds the files; the message says how to install them.
    """
    env = os.environ.get("FASHION_MNIST_DIR")
    candidates = [Path(folder)] if folder is not None else [Path(env)] if env else [DEFAULT_FOLDER]
    if folder is None and not env:
        candidates += [p for p in [_from_dpkg()] if p is not None]
    for c in candidates:
        if all((c / name).is_file() for pair in FILES.values() for name in pair):
            return c
    raise FileNotFoundError(
        f"Fashion-MNIST IDX files not found in {', '.join(map(str, candidates))}: expected "
        f"{', '.join(n for pair in FILES.values() for n in pair)}. Install them with "
        f"`sudo apt-get install {DEBIAN_PACKAGE}`, or set FASHION_MNIST_DIR to a folder holding them."
    )


def load_fashion_mnist(
    split: Literal["train", "test"] = "train", folder: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one official split.

    Returns
    -------
    images : ndarray of shape (n, 28, 28), uint8
        n = 60,000 (train) or 10,000 (test); 0 is background (black), as in the files.
    labels : ndarray of shape (n,), int64
        Class indices into :data:`CLASS_NAMES`.
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    where = find_folder(folder)
    images = read_idx(where / FILES[split][0])
    labels = read_idx(where / FILES[split][1]).astype(np.int64)
    if images.shape != (SIZES[split], 28, 28) or labels.shape != (SIZES[split],):
        raise ValueError(f"{where}: unexpected shapes {images.shape} / {labels.shape} for the {split} split")
    return images, labels


if __name__ == "__main__":
    for part in FILES:
        x, y = load_fashion_mnist(part)  # type: ignore[arg-type]
        counts = np.bincount(y, minlength=10)
        print(f"{part}: {x.shape} {x.dtype}, per class {counts.tolist()} ({find_folder()})")
