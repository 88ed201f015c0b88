"""A teacher that reads any model's predictions from a file.

Use it to distill from a model alloop does not run itself (a large hosted model, an ensemble,
last quarter's production model), or as a documented stand-in for a CLIP teacher where CLIP
weights are unavailable.

Project file::

    [teacher]
    name = "predictions"
    params = { path = "teacher.npz" }

File formats:

- ``.npz`` with ``keys`` (n,) sample keys, ``proba`` (n, C) and optionally ``labels`` (C,)
  naming the columns (then columns are matched to the project's labels by name);
- ``.jsonl`` with one object per line: ``{"key": ..., "proba": {"cat": 0.7, "dog": 0.3}}``
  (a mapping label -> probability; labels missing from a row count as 0).

Rows are renormalized to sum to 1. A sample without a prediction is an error naming it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from alloop.errors import ConfigError, format_list
from alloop.files import iter_jsonl
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import SampleRef, TeacherContext


class PredictionsParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    """An .npz or .jsonl file of predictions (relative paths: to the work directory's parent)."""


class PredictionsTeacher:
    """Probabilities looked up by sample key in a file (see the module docstring)."""

    name = "predictions"

    def __init__(self, context: TeacherContext, params: PredictionsParams) -> None:
        path = params.path if params.path.is_absolute() else context.work_dir.parent / params.path
        if not path.is_file():
            raise ConfigError(f"Teacher predictions file {str(path)!r} does not exist. Fix [teacher] params.path.")
        self.path = path
        self.labels = tuple(context.labels)
        self._digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        self._table: dict[str, np.ndarray] | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any] | None, *, context: TeacherContext) -> PredictionsTeacher:
        from alloop.params import parse_params

        return cls(context, parse_params(PredictionsParams, params, "predictions teacher parameters"))

    def fingerprint(self) -> str:
        return f"predictions-v1-{self._digest}"

    def _columns(self, names: Sequence[str]) -> list[int]:
        unknown = [n for n in names if n not in self.labels]
        missing = [lb for lb in self.labels if lb not in names]
        if unknown or missing:
            raise ConfigError(
                f"{self.path}: prediction labels do not match the project's label set (missing "
                f"{format_list(missing)}; unknown {format_list(unknown)})."
            )
        return [list(names).index(lb) for lb in self.labels]

    def _load(self) -> dict[str, np.ndarray]:
        if self._table is not None:
            return self._table
        table: dict[str, np.ndarray] = {}
        if self.path.suffix == ".npz":
            with np.load(self.path, allow_pickle=False) as z:
                keys, proba = [str(k) for k in z["keys"]], np.asarray(z["proba"], dtype=np.float64)
                names = [str(x) for x in z["labels"]] if "labels" in z.files else None
            if proba.ndim != 2 or proba.shape[0] != len(keys):
                raise ConfigError(
                    f"{self.path}: proba has shape {proba.shape}; expected one row per key ({len(keys)})."
                )
            if names is not None:
                if len(names) != proba.shape[1]:
                    raise ConfigError(f"{self.path}: {len(names)} labels but {proba.shape[1]} probability columns.")
                proba = proba[:, self._columns(names)]
            elif proba.shape[1] != len(self.labels):
                raise ConfigError(
                    f"{self.path}: {proba.shape[1]} probability columns but the project has {len(self.labels)} labels; "
                    "store a `labels` array naming the columns."
                )
            table = dict(zip(keys, proba))
        elif self.path.suffix == ".jsonl":
            index = {lb: i for i, lb in enumerate(self.labels)}
            expect = '{"key": ..., "proba": {label: p}}'
            for no, obj in iter_jsonl(self.path, error=ConfigError, expect=expect):
                try:
                    row = np.zeros(len(self.labels))
                    for lb, v in obj["proba"].items():
                        if lb not in index:
                            raise ConfigError(f"{self.path}:{no}: label {lb!r} is not in the project's label set.")
                        row[index[lb]] = float(v)
                    table[str(obj["key"])] = row
                except (KeyError, TypeError, AttributeError, ValueError) as exc:
                    if isinstance(exc, ConfigError):
                        raise
                    raise ConfigError(f"{self.path}:{no}: expected {expect}, got an error: {exc}.") from None
        else:
            raise ConfigError(f"Teacher predictions must be .npz or .jsonl; got {self.path.name!r}.")
        self._table = table
        return table

    def predict_proba(self, samples: Sequence[SampleRef], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        table = self._load()
        missing = [s.key for s in samples if s.key not in table]
        if missing:
            raise ConfigError(
                f"{self.path} has no prediction for {len(missing)} samples (e.g. {format_list(missing, 3)}). "
                "Predict every sample of the pool, or remove the teacher."
            )
        out = np.array([table[s.key] for s in samples], dtype=np.float64).reshape(len(samples), len(self.labels))
        if (out < 0).any() or not np.isfinite(out).all():
            raise ConfigError(f"{self.path}: probabilities must be finite and non-negative.")
        sums = out.sum(axis=1, keepdims=True)
        if (sums <= 0).any():
            raise ConfigError(f"{self.path}: a prediction row sums to 0.")
        return (out / sums).astype(np.float32)
