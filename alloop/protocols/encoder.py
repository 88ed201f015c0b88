"""The Encoder protocol: samples in, float32 feature rows out.

Encoders are registered in the ``alloop.encoders`` entry-point group and built with
``Cls.from_params(params, context=PluginContext)``. They read samples through
:class:`SampleRef` (never the database); the on-disk feature cache calls them once per
content and fingerprint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from alloop.progress import Progress

__all__ = ["Encoder", "SampleRef"]


@dataclass(frozen=True)
class SampleRef:
    """What an encoder (or a teacher) needs to read one sample.

    ``data`` is the sample's stored locator (see :class:`alloop.pool.base.PoolItem`);
    relative paths in it are relative to ``work_dir``.
    """

    key: str
    kind: str
    content_hash: str
    data: dict[str, Any]
    work_dir: Path


@runtime_checkable
class Encoder(Protocol):
    """Maps samples to float32 feature rows.

    ``fingerprint()`` must change whenever the output for the same content could change
    (other weights, other parameters): it keys the on-disk cache.
    """

    def fingerprint(self) -> str: ...

    def encode(self, samples: Sequence[SampleRef], progress: Progress) -> NDArray[np.float32]:
        """Return an array of shape (len(samples), dim), float32.

        Raises :class:`alloop.errors.SampleDecodeError` naming the first unreadable sample.
        """
        ...
