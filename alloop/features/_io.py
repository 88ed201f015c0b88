"""File helpers shared by the image encoders: weight-file hashes and image decoding."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from alloop.errors import SampleDecodeError
from alloop.protocols import SampleRef

_SHA_CACHE: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, remembered per (path, inode, size, mtime) in this process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def read_rgb(sample: SampleRef) -> Any:
    """Decode an image sample into an upright RGB PIL image.

    16/32-bit grayscale is scaled to 8 bits (not clipped). Unreadable files raise
    :class:`SampleDecodeError` naming the sample and the reason.
    """
    from PIL import Image, ImageOps

    raw = sample.data.get("path")
    if not isinstance(raw, str):
        raise SampleDecodeError(sample.key, f"expected data {{'path': <file>}}, got {sample.data!r}")
    path = Path(raw) if Path(raw).is_absolute() else Path(sample.work_dir) / raw
    try:
        img: Image.Image  # Image.open gives an ImageFile; exif_transpose and fromarray plain Images
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode.startswith("I") or img.mode == "F":
                scale = 1.0 if img.mode == "F" else 65535.0
                values = np.clip(np.asarray(img, dtype=np.float32) / scale, 0.0, 1.0)
                img = Image.fromarray(np.round(values * 255).astype(np.uint8))
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise SampleDecodeError(sample.key, f"{type(exc).__name__}: {exc}") from exc
