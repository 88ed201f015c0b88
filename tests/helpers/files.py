"""File helpers for tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def overwrite(src: Path | str, dst: Path | str) -> None:
    """Overwrite ``dst`` in place with the bytes of ``src``, as an editor or a training run would,
    with a modification time one second after the old one: set, not waited for (file systems
    keep mtimes at various granularities)."""
    before = os.stat(dst).st_mtime_ns
    shutil.copy(src, dst)
    os.utime(dst, ns=(before + 10**9, before + 10**9))
