"""Fashion-MNIST (Zalando: 70,000 28x28 grayscale articles, 10 classes) from local IDX files.

The files come from the Debian package ``dataset-fashion-mnist`` (no network needed)::

    sudo apt-get install dataset-fashion-mnist     # -> /usr/share/datasets/fashion-mnist/

:func:`find_fashion_mnist` looks for them, in this order, and stops at the first place given:

1. the ``folder`` argument;
2. ``$ALLOOP_FASHION_MNIST_DIR``, else ``$FASHION_MNIST_DIR`` (its earlier name);
3. the known locations (:data:`KNOWN_FOLDERS`: Debian's), then wherever ``dpkg -L
   dataset-fashion-mnist`` lists them.

When they are missing the error lists every place it looked and how to install them.

    >>> images, labels = load_fashion_mnist("test")   # (10000, 28, 28) uint8, (10000,) int64
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from alloop.datasets.idx import read_idx
from alloop.errors import ConfigError

__all__ = [
    "CLASS_NAMES",
    "ENV_VARS",
    "KNOWN_FOLDERS",
    "DatasetNotFoundError",
    "find_fashion_mnist",
    "load_fashion_mnist",
]

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEBIAN_PACKAGE = "dataset-fashion-mnist"
#: Environment variables naming the folder, in order of precedence (the second is the old name).
ENV_VARS = ("ALLOOP_FASHION_MNIST_DIR", "FASHION_MNIST_DIR")
#: Where packages put the files.
KNOWN_FOLDERS = (Path("/usr/share/datasets/fashion-mnist"),)
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
SIZES = {"train": 60000, "test": 10000}
Split = Literal["train", "test"]


class DatasetNotFoundError(ConfigError, FileNotFoundError):
    """The files of a dataset are in none of the places looked at (the message lists them)."""


def _from_dpkg() -> Path | None:
    """The folder ``dpkg -L dataset-fashion-mnist`` lists the test images in, if any."""
    if shutil.which("dpkg") is None:
        return None
    done = subprocess.run(["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.endswith(FILES["test"][0]):
            return Path(line).parent
    return None


def _places(folder: str | os.PathLike[str] | None) -> list[tuple[Path, str]]:
    """The folders to look in, each with why: the argument, else a variable, else the known ones."""
    if folder is not None:
        return [(Path(folder).expanduser(), "the folder argument")]
    for name in ENV_VARS:
        if os.environ.get(name):
            return [(Path(os.environ[name]).expanduser(), f"${name}")]
    places = [(p, f"Debian's {DEBIAN_PACKAGE}") for p in KNOWN_FOLDERS]
    listed = _from_dpkg()
    if listed is not None and listed not in KNOWN_FOLDERS:
        places.append((listed, f"dpkg -L {DEBIAN_PACKAGE}"))
    return places


def find_fashion_mnist(
    folder: str | os.PathLike[str] | None = None, *, splits: Sequence[Split] = ("train", "test")
) -> Path:
    """The folder holding the IDX files of ``splits`` (see the module docstring for the order).

    Parameters
    ----------
    folder : path-like, optional
        Look only here.
    splits : sequence of {"train", "test"}
        Whose image and label files must be there.

    Raises
    ------
    DatasetNotFoundError
        No place holds the files; the message lists where it looked and how to install them.
    """
    names = [name for split in splits for name in FILES[split]]
    places = _places(folder)
    for place, _ in places:
        if all((place / name).is_file() for name in names):
            return place
    looked = "; ".join(f"{place} ({why})" for place, why in places)
    raise DatasetNotFoundError(
        f"Fashion-MNIST files not found: looked for {', '.join(names)} in {looked}. Install them with "
        f"`sudo apt-get install {DEBIAN_PACKAGE}`, or set {ENV_VARS[0]} to a folder holding them."
    )


def load_fashion_mnist(
    split: Split = "train", folder: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one official split.

    Returns
    -------
    images : ndarray of shape (n, 28, 28), uint8
        n = 60,000 (train) or 10,000 (test); 0 is background (black), as in the files.
    labels : ndarray of shape (n,), int64
        Class indices into :data:`CLASS_NAMES`.

    Raises
    ------
    ConfigError
        ``split`` is not ``"train"`` or ``"test"``.
    DatasetNotFoundError
        The files are missing (see :func:`find_fashion_mnist`).
    ValueError
        The files do not hold what Fashion-MNIST holds.
    """
    if split not in FILES:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}.")
    where = find_fashion_mnist(folder, splits=(split,))
    images = read_idx(where / FILES[split][0])
    labels = read_idx(where / FILES[split][1]).astype(np.int64)
    if images.shape != (SIZES[split], 28, 28) or labels.shape != (SIZES[split],):
        raise ValueError(f"{where}: unexpected shapes {images.shape} / {labels.shape} for the {split} split")
    return images, labels


if __name__ == "__main__":
    for part in FILES:
        x, y = load_fashion_mnist(part)  # type: ignore[arg-type]
        counts = np.bincount(y, minlength=10)
        print(f"{part}: {x.shape} {x.dtype}, per class {counts.tolist()} ({find_fashion_mnist()})")
