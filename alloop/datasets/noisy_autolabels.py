"""Imperfect proposals derived from COCO ground truth: a stand-in for an open-vocabulary detector.

:func:`write_autolabels_from_truth` reads a COCO file (e.g. from
:func:`alloop.datasets.detection.make_detection_pool`) and writes JSON lines of proposals with
exactly the misses, wrong labels, false positives, box jitter and scores asked for.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alloop.detection.autolabels import coco_proposals
from alloop.detection.boxes import box_iou, clip_boxes, invalid_boxes
from alloop.detection.coco import load_json, parse_coco
from alloop.errors import ConfigError, PoolImportError
from alloop.files import atomic_write
from alloop.rng import derive_rng

__all__ = ["NoisyAutolabels", "write_autolabels_from_truth"]


@dataclass(frozen=True)
class NoisyAutolabels:
    """What :func:`write_autolabels_from_truth` wrote; ``os.fspath()`` of it is the JSONL file."""

    path: Path
    n_truth: int
    n_missed: int
    n_relabeled: int
    n_false_positives: int
    n_proposals: int

    def __fspath__(self) -> str:
        return str(self.path)


def write_autolabels_from_truth(
    coco_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    noise: float = 0.05,
    miss_rate: float = 0.1,
    false_positive_rate: float = 0.1,
    label_confusion: float = 0.05,
    seed: int = 0,
) -> NoisyAutolabels:
    """Write imperfect proposals derived from COCO ground truth, as JSON lines.

    A stand-in for an open-vocabulary detector's autolabels. With ``n`` true objects:

    - exactly ``round(miss_rate * n)`` objects, chosen at random, get no proposal;
    - of the ``m`` others, exactly ``round(label_confusion * m)`` get another class (uniform);
    - every found box is jittered: ``x += N(0, noise * w)``, ``y += N(0, noise * h)``,
      ``w *= exp(N(0, noise))``, ``h *= exp(N(0, noise))``, clipped to the image (``noise=0``
      keeps the true boxes);
    - exactly ``round(false_positive_rate * n)`` spurious boxes are added on random images, with
      the size of a random true box, a random class and IoU < 0.1 with every true box of their
      image (when the image leaves room);
    - scores are uniform in [0.5, 1] for right labels, [0.25, 0.75] for wrong labels and
      [0.05, 0.6] for spurious boxes.

    Parameters
    ----------
    coco_path : path-like
        COCO ground truth whose images have ``width`` and ``height`` (e.g. from
        :func:`make_detection_pool`).
    out_path : path-like
        The ``.jsonl`` file to write: ``{"image", "box", "label", "score"}`` per line, grouped
        by image in COCO order; readable by :func:`~alloop.detection.autolabels.read_autolabels`.
    noise, miss_rate, false_positive_rate, label_confusion : float
        As above; the rates are in [0, 1], ``noise >= 0``.
    seed : int

    Returns
    -------
    NoisyAutolabels
        The path and the realized counts.
    """
    for name, value in (("miss_rate", miss_rate), ("false_positive_rate", false_positive_rate),
                        ("label_confusion", label_confusion)):
        if not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
            raise ConfigError(f"{name} must be between 0 and 1, got {value!r}.")
    if not (isinstance(noise, (int, float)) and 0.0 <= float(noise) < 10 and np.isfinite(noise)):
        raise ConfigError(f"noise must be a number >= 0 (a fraction of the box size), got {noise!r}.")
    noise, miss_rate = float(noise), float(miss_rate)
    false_positive_rate, label_confusion = float(false_positive_rate), float(label_confusion)
    coco_path = Path(coco_path)
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".jsonl":
        raise ConfigError(f"out_path must end in .jsonl (one proposal per line), got {str(out_path)!r}.")
    need = "need a readable COCO file with categories (name) and images (file_name, width, height)"
    try:
        data = load_json(coco_path)
    except PoolImportError as exc:
        raise ConfigError(f"{coco_path}: {need}: {exc}") from None
    doc = parse_coco(coco_path, data)
    unsized = [img.file_name for img in doc.images if img.size is None]
    if unsized:
        raise ConfigError(f"{coco_path}: {need}: image {unsized[0]!r} has no width and height.")
    names, sizes, order = doc.categories, doc.sizes(), [img.file_name for img in doc.images]
    truth = coco_proposals(doc, image_sizes=sizes)
    if label_confusion > 0 and len(names) < 2:
        raise ConfigError("label_confusion > 0 needs at least two categories to confuse.")

    rng = derive_rng(seed, "autolabels")
    n = len(truth)
    missed = np.zeros(n, bool)
    missed[rng.choice(n, size=round(miss_rate * n), replace=False)] = True
    found = np.flatnonzero(~missed)
    relabel = np.zeros(n, bool)
    relabel[rng.choice(found, size=round(label_confusion * len(found)), replace=False)] = True

    label = truth.label.copy()
    for i in np.flatnonzero(relabel):
        others = [c for c in names if c != label[i]]
        label[i] = others[rng.integers(len(others))]
    box = truth.box.astype(np.float64)
    w, h = box[:, 2].copy(), box[:, 3].copy()
    jitter = rng.normal(0.0, 1.0, size=(n, 4)) * float(noise)
    moved = np.stack([box[:, 0] + jitter[:, 0] * w, box[:, 1] + jitter[:, 1] * h,
                      w * np.exp(jitter[:, 2]), h * np.exp(jitter[:, 3])], axis=1)
    wh = np.array([sizes[k] for k in truth.image.tolist()]).reshape(-1, 2)
    for i in range(n):
        clipped = clip_boxes(moved[i : i + 1], *wh[i])[0]
        moved[i] = clipped if not invalid_boxes(clipped[None])[0] and min(clipped[2:]) >= 1 else box[i]
    score = np.where(relabel, rng.uniform(0.25, 0.75, n), rng.uniform(0.5, 1.0, n))

    records: dict[str, list[dict[str, Any]]] = {k: [] for k in order}
    for i in found:
        records[str(truth.image[i])].append(
            {"image": str(truth.image[i]), "box": [round(float(v), 2) for v in moved[i]],
             "label": str(label[i]), "score": round(float(score[i]), 4)}
        )
    n_fp = round(false_positive_rate * n)
    for _ in range(n_fp):
        key = order[rng.integers(len(order))]
        iw, ih = sizes[key]
        if n:
            bw, bh = (float(v) for v in truth.box[rng.integers(n), 2:])
        else:
            bw, bh = iw / 4, ih / 4
        bw, bh = min(bw, iw), min(bh, ih)
        own = truth.box[truth.image == key]
        for _try in range(50):
            cand = [float(rng.uniform(0, iw - bw)), float(rng.uniform(0, ih - bh)), bw, bh]
            if not len(own) or box_iou([cand], own).max() < 0.1:
                break
        records[key].append(
            {"image": key, "box": [round(v, 2) for v in cand], "label": names[rng.integers(len(names))],
             "score": round(float(rng.uniform(0.05, 0.6)), 4)}
        )
    lines = [json.dumps(r) for k in order for r in records[k]]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_path, "\n".join(lines) + "\n" if lines else "")
    return NoisyAutolabels(
        path=out_path,
        n_truth=n,
        n_missed=int(missed.sum()),
        n_relabeled=int(relabel.sum()),
        n_false_positives=n_fp,
        n_proposals=len(lines),
    )
