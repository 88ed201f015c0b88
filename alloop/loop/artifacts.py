"""The files a round writes, and the typed record of its scores.

A round's files live under the project's work dir:

- ``rounds/round-NNNN/scores/``: :class:`RoundScores`, one ``.npy`` per array (written shard
  by shard through :class:`ScoresWriter`, read back memory-mapped), written by the SCORED step
  and read by the SELECTED and PUSHED steps (so a restarted process selects and pre-annotates
  from the same numbers);
- ``models/round-NNNN.joblib``: the fitted model of a feature learner (``[loop] save_models``);
- ``models/round-NNNN/``: the run folder of an external learner, its predictions included.

Files are written atomically before the transaction that records them commits.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alloop.protocols.learner import MODEL_ARRAYS

__all__ = ["ObjectColumns", "RoundScores", "ScoresWriter", "model_stem", "scores_path"]


#: score files larger than this are read memory-mapped
MMAP_BYTES = 1 << 24


def model_stem(round_number: int) -> str:
    """``round-0003``: the name of a round's model artifact."""
    return f"round-{round_number:04d}"


def scores_path(work_dir: Path, round_number: int) -> Path:
    return Path(work_dir) / "rounds" / model_stem(round_number) / "scores"


class ScoresWriter:
    """Writes a round's score arrays into a temporary folder, then moves it into place at once.

    Large arrays are created with :meth:`array` as writable memory maps and filled shard by shard
    (memory: the page cache, not the process); small ones are saved with :meth:`put`.
    :meth:`commit` flushes everything and renames the folder to ``path`` (a folder left by a
    killed attempt is replaced). Nothing is visible at ``path`` before the commit.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f"{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        self.tmp.mkdir(parents=True)
        self._maps: list[np.memmap[Any, Any]] = []
        self._small: dict[str, NDArray[Any]] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: Any) -> NDArray[Any]:
        """A writable array saved at :meth:`commit`: memory-mapped when large, in memory when small."""
        if int(np.prod(shape)) * np.dtype(dtype).itemsize <= MMAP_BYTES:
            arr = np.empty(shape, dtype=dtype)
            self._small[name] = arr
            return arr
        mm: np.memmap[Any, Any] = np.lib.format.open_memmap(  # type: ignore[no-untyped-call]
            self.tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        self._maps.append(mm)
        return mm

    def put(self, name: str, arr: NDArray[Any]) -> None:
        np.save(self.tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)

    def commit(self) -> None:
        for name, arr in self._small.items():
            if not (self.tmp / f"{name}.npy").exists():  # not replaced by a put
                self.put(name, arr)
        for mm in self._maps:
            mm.flush()
        self._maps.clear()
        self._small.clear()
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._maps.clear()
        self._small.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


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
    sample_rows : ndarray of shape (n,), int64, optional
        The scored samples' vector-store rows (``-1``: none), so that selection reads the scored
        set from here instead of listing the pool from the database again. Absent in scores
        written before it was kept.
    model_arrays : dict of str to ndarray, float32
        What only some models give, for the strategies that declare it
        (:data:`~alloop.protocols.learner.MODEL_ARRAYS`: ``"penultimate"``, ``"members"``), one
        row per sample; a file each, named by the requirement.
    """

    sample_ids: NDArray[np.int64]
    proba: NDArray[np.float32] | None = None
    embeddings: NDArray[np.float32] | None = None
    objects: ObjectColumns | None = None
    sample_rows: NDArray[np.int64] | None = None
    model_arrays: dict[str, NDArray[np.float32]] = field(default_factory=dict)

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
            sample_rows=None if self.sample_rows is None else self.sample_rows[keep],
            model_arrays={k: v[keep] for k, v in self.model_arrays.items()},
        )

    # -- the files -----------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the folder at once (files ``sample_ids``, ``sample_rows``, ``proba``, ``embeddings``, ``obj_*``)."""
        w = ScoresWriter(path)
        w.put("sample_ids", np.asarray(self.sample_ids, dtype=np.int64))
        if self.sample_rows is not None:
            w.put("sample_rows", np.asarray(self.sample_rows, dtype=np.int64))
        if self.proba is not None:
            w.put("proba", np.asarray(self.proba, dtype=np.float32))
        if self.embeddings is not None:
            w.put("embeddings", np.asarray(self.embeddings, dtype=np.float32))
        for name, arr in self.model_arrays.items():
            w.put(name, np.asarray(arr, dtype=np.float32))
        if self.objects is not None:
            o = self.objects
            columns: dict[str, NDArray[Any]] = dict(obj_image=o.image, obj_label=o.label, obj_score=o.score,
                                                    obj_box=o.box, obj_features=o.features)
            for name, arr in columns.items():
                w.put(name, arr)
        w.commit()

    @classmethod
    def load(cls, path: Path) -> RoundScores:
        """Read the folder; large ``proba`` and ``embeddings`` memory-mapped (read-only)."""
        a = {f.stem: np.load(f, allow_pickle=False, mmap_mode="r" if (
                 f.stem in ("proba", "embeddings", *MODEL_ARRAYS) and f.stat().st_size > MMAP_BYTES) else None)
             for f in Path(path).glob("*.npy")}
        objects = None
        if "obj_image" in a:
            objects = ObjectColumns(image=a["obj_image"], label=a["obj_label"], score=a["obj_score"],
                                    box=a["obj_box"], features=a["obj_features"])
        return cls(sample_ids=a["sample_ids"], proba=a.get("proba"), embeddings=a.get("embeddings"),
                   objects=objects, sample_rows=a.get("sample_rows"),
                   model_arrays={k: a[k] for k in MODEL_ARRAYS if k in a})
