"""The files a round writes, and the typed record of its scores.

A round's files live under the project's work dir:

- ``rounds/round-NNNN/scores.npz``: :class:`RoundScores`, written by the SCORED step and read
  by the SELECTED and PUSHED steps (so a restarted process selects and pre-annotates from the
  same numbers);
- ``models/round-NNNN.joblib``: the fitted model of a feature learner (``[loop] save_models``);
- ``models/round-NNNN/``: the run folder of an external learner, its predictions included.

Files are written atomically before the transaction that records them commits.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alloop.files import atomic_write

__all__ = ["ObjectColumns", "RoundScores", "model_stem", "scores_path"]


def model_stem(round_number: int) -> str:
    """``round-0003``: the name of a round's model artifact."""
    return f"round-{round_number:04d}"


def scores_path(work_dir: Path, round_number: int) -> Path:
    return Path(work_dir) / "rounds" / model_stem(round_number) / "scores.npz"


@dataclass(frozen=True)
class ObjectColumns:
    """The pool's object proposals, one row per object.

    Attributes
    ----------
    image : ndarray of shape (m,), int64
        Position (row of :attr:`RoundScores.sample_ids`) of the image holding the object.
    label : ndarray of shape (m,), int64
        Index of the predicted class in the project's labels.
    score : ndarray of shape (m,), float32
    box : ndarray of shape (m, 4), float32
        ``(x0, y0, x1, y1)`` in pixels.
    features : ndarray of shape (m, d), float32
        Crop features (zeros when the strategy does not cluster objects).
    """

    image: NDArray[np.int64]
    label: NDArray[np.int64]
    score: NDArray[np.float32]
    box: NDArray[np.float32]
    features: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def on(self, keep: NDArray[np.bool_]) -> ObjectColumns:
        """The objects of the images kept (``keep``: a boolean mask over the old positions),
        with positions renumbered to the kept images."""
        new_pos = np.cumsum(keep) - 1
        mine = keep[self.image] if len(self) else np.zeros(0, bool)
        return ObjectColumns(image=new_pos[self.image[mine]], label=self.label[mine], score=self.score[mine],
                             box=self.box[mine], features=self.features[mine])


@dataclass(frozen=True)
class RoundScores:
    """What the SCORED step computed for the pool, row by row.

    Attributes
    ----------
    sample_ids : ndarray of shape (n,), int64
        Database ids of the scored samples; row ``i`` of every other array is sample ``i``.
    proba : ndarray of shape (n, C), float32, optional
        The round's model's class probabilities.
    embeddings : ndarray of shape (n, k), float32, optional
        The model's own features (learners that give them).
    objects : ObjectColumns, optional
        Object proposals (detection projects with ``[proposals]``).
    """

    sample_ids: NDArray[np.int64]
    proba: NDArray[np.float32] | None = None
    embeddings: NDArray[np.float32] | None = None
    objects: ObjectColumns | None = None

    def __len__(self) -> int:
        return int(self.sample_ids.shape[0])

    def on(self, keep: NDArray[np.bool_]) -> RoundScores:
        """The rows where ``keep`` (a boolean mask) is true."""
        return replace(
            self,
            sample_ids=self.sample_ids[keep],
            proba=None if self.proba is None else self.proba[keep],
            embeddings=None if self.embeddings is None else self.embeddings[keep],
            objects=None if self.objects is None else self.objects.on(keep),
        )

    # -- the file ------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write an ``.npz`` atomically (keys: ``sample_ids``, ``proba``, ``embeddings``, ``obj_*``)."""
        arrays: dict[str, NDArray[Any]] = {"sample_ids": np.asarray(self.sample_ids, dtype=np.int64)}
        if self.proba is not None:
            arrays["proba"] = np.asarray(self.proba, dtype=np.float32)
        if self.embeddings is not None:
            arrays["embeddings"] = np.asarray(self.embeddings, dtype=np.float32)
        if self.objects is not None:
            o = self.objects
            arrays.update(obj_image=o.image, obj_label=o.label, obj_score=o.score, obj_box=o.box,
                          obj_features=o.features)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=True, **arrays)  # the default, spelled out: else mypy matches **arrays to it
        atomic_write(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> RoundScores:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        objects = None
        if "obj_image" in a:
            objects = ObjectColumns(image=a["obj_image"], label=a["obj_label"], score=a["obj_score"],
                                    box=a["obj_box"], features=a["obj_features"])
        return cls(sample_ids=a["sample_ids"], proba=a.get("proba"), embeddings=a.get("embeddings"),
                   objects=objects)
