"""The IDX file format of MNIST and Fashion-MNIST (``*-idx3-ubyte``, gzipped or not)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["read_idx"]


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic ``00 00 08 <ndim>``), gzipped or not.

    Returns
    -------
    ndarray of uint8
        The shape the header gives, e.g. ``(n, 28, 28)`` for images, ``(n,)`` for labels.

    Raises
    ------
    ValueError
        Not an IDX file of unsigned bytes, or its size disagrees with its header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()!r}, want 000008xx)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {len(data) - offset} values")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)
