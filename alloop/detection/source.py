"""A detection project's proposals: from the configured source to an ObjectSet over the pool.

``[proposals]`` in alloop.toml names the source (:class:`alloop.config.ProposalsConfig`):
an autolabel file, a YOLO-style ONNX detector, or the detections of the round's model (a
``command`` learner's predictions). :func:`load_proposals` gives the pool's proposals;
:func:`object_set` embeds their crops with the project's image encoder for OFDS.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alloop.config import ProposalsConfig
from alloop.detection.boxes import Proposals
from alloop.errors import ConfigError, PoolImportError, format_list
from alloop.files import iter_jsonl
from alloop.progress import NULL_PROGRESS, Progress

logger = logging.getLogger(__name__)

__all__ = ["load_proposals", "object_set"]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _from_file(path: Path, labels: Sequence[str], keys: set[str]) -> Proposals:
    from alloop.detection.autolabels import read_autolabels

    props = read_autolabels(path, labels=labels)
    if not len(props):
        return props
    inside = np.array([k in keys for k in props.image.tolist()], dtype=bool)
    if not inside.any():
        raise PoolImportError(
            f"None of the {len(props)} proposals in {str(path)!r} names a pool image (e.g. "
            f"{props.image[0]!r}; pool keys e.g. {format_list(sorted(keys)[:3])}). Image keys must be "
            "the pool's keys: the image path relative to the [pool.source] folder."
        )
    if not inside.all():
        logger.info("%s: %d proposals name images outside the pool (held out or unreadable); ignored.",
                    path, int((~inside).sum()))
    return props[inside]


def _read_cache(cache: Path) -> dict[str, list[dict[str, Any]]]:
    """``content_hash -> objects`` of an ONNX cache file.

    A line cut short by a killed process (anywhere: each record is written as ``"\\n" + json +
    "\\n"``, so the next one starts on a fresh line) is skipped with a warning: that image is
    detected again.
    """

    def unreadable(lineno: int, _reason: str = "") -> None:
        logger.warning("%s line %d is unreadable (an interrupted write?); detecting that image again.", cache, lineno)

    done: dict[str, list[dict[str, Any]]] = {}
    for lineno, row in iter_jsonl(cache, skip_bad_line=unreadable):
        try:
            done[str(row["content_hash"])] = list(row["objects"])
        except (KeyError, TypeError):
            unreadable(lineno)
    return done


def _from_onnx(cfg: ProposalsConfig, path: Path, labels: Sequence[str], samples: Sequence[Any],
               cache_dir: Path, progress: Progress) -> Proposals:
    """Run the ONNX detector on the pool images it has not seen (results cached per model file)."""
    from alloop.detection.onnx_yolo import OnnxYoloDetector

    classes = list(cfg.classes or labels)
    unknown = [c for c in classes if c not in labels]
    if unknown:
        raise ConfigError(
            f"[proposals] classes {format_list(unknown)} are not in the project's labels "
            f"({format_list(labels, 20)}); the detector's classes must be project labels. Add them to "
            "[project] labels or rename them in [proposals] classes."
        )
    setup = json.dumps([classes, cfg.input_size, cfg.iou, cfg.min_score], sort_keys=True)
    tag = hashlib.sha256((_file_digest(path) + setup).encode()).hexdigest()[:16]
    cache = cache_dir / "proposals" / f"onnx-{tag}.jsonl"
    done = _read_cache(cache) if cache.exists() else {}
    todo = [smp for smp in samples if smp.content_hash not in done]
    if todo:
        detector = OnnxYoloDetector(path, classes, input_size=cfg.input_size, conf=cfg.min_score, iou=cfg.iou)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with (
            progress.task("Detecting objects (ONNX)", total=len(todo)) as bar,
            open(cache, "a", encoding="utf-8") as fh,
        ):
            for smp in todo:
                found = detector.detect([smp.data["path"]], keys=[smp.key])
                objects = [{"box": r["box"], "label": r["label"], "score": r["score"]} for r in found.to_records()]
                done[smp.content_hash] = objects
                fh.write("\n" + json.dumps({"content_hash": smp.content_hash, "objects": objects}) + "\n")
                fh.flush()
                bar.advance()
    return Proposals.from_records(
        {"image": smp.key, **obj} for smp in samples for obj in done.get(smp.content_hash, [])
    )


def load_proposals(
    cfg: ProposalsConfig,
    labels: Sequence[str],
    samples: Sequence[Any],
    *,
    model_detections: Proposals | None = None,
    cache_dir: Path,
    progress: Progress = NULL_PROGRESS,
) -> tuple[Proposals, str]:
    """The proposals of ``samples`` (pool samples: ``key``, ``data``, ``content_hash``).

    Returns the proposals with ``score >= cfg.min_score`` and a word on where they came from.
    """
    keys = {smp.key for smp in samples}
    if cfg.source == "model" and model_detections is not None:
        props = model_detections[np.array([k in keys for k in model_detections.image.tolist()], dtype=bool)] \
            if len(model_detections) else model_detections
        where = "the round's model"
    elif cfg.path is None:
        logger.warning("[proposals] source = 'model' has no model yet (round 0) and no `path`: no proposals, so "
                       "object-level strategies pick at random. Give `path` (autolabels or an .onnx) for round 0.")
        return Proposals.empty(), "none yet (no model, no path)"
    elif cfg.source == "onnx" or cfg.path.suffix.lower() == ".onnx":
        props, where = _from_onnx(cfg, cfg.path, labels, samples, cache_dir, progress), f"ONNX model {cfg.path.name}"
    else:
        props, where = _from_file(cfg.path, labels, keys), f"file {cfg.path.name}"
    return props.above(cfg.min_score), where


def object_set(
    props: Proposals,
    samples: Sequence[Any],
    labels: Sequence[str],
    encoder: Any,
    cache: Any,
    *,
    pad: int,
    work_dir: Path,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, np.ndarray]:
    """Columns of an :class:`~alloop.strategies.objects.ObjectSet` over the pool positions of ``samples``.

    Returns ``obj_image`` (pool positions), ``obj_label`` (index in ``labels``), ``obj_score``,
    ``obj_box`` (x0, y0, x1, y1) and ``obj_features`` (the encoder on each padded crop; with
    ``encoder=None`` a column of zeros: the proposals are then only shown, never clustered).
    """
    from alloop.features.objects import object_features

    position = {smp.key: i for i, smp in enumerate(samples)}
    class_of = {lb: j for j, lb in enumerate(labels)}
    keep = np.array([k in position for k in props.image.tolist()], dtype=bool) if len(props) else np.zeros(0, bool)
    props = props[keep] if len(props) else props
    if not len(props):
        return {"obj_image": np.zeros(0, np.int64), "obj_label": np.zeros(0, np.int64),
                "obj_score": np.zeros(0, np.float32), "obj_box": np.zeros((0, 4), np.float32),
                "obj_features": np.zeros((0, 1), np.float32)}
    cols: dict[str, np.ndarray] = {
        "obj_image": np.array([position[k] for k in props.image.tolist()], dtype=np.int64),
        "obj_label": np.array([class_of[lb] for lb in props.label.tolist()], dtype=np.int64),
        "obj_score": props.score.astype(np.float32),
        "obj_box": props.xyxy().astype(np.float32),
    }
    if encoder is None:
        return {**cols, "obj_features": np.zeros((len(props), 1), np.float32)}
    images: Mapping[str, tuple[Any, str]] = {
        smp.key: (smp.data["path"], smp.content_hash) for smp in samples if smp.key in set(props.image.tolist())
    }
    feats = object_features(images, props.image.tolist(), props.box, encoder, cache, pad=pad,
                            box_format="xywh", work_dir=work_dir, progress=progress)
    return {**cols, "obj_features": np.asarray(feats, dtype=np.float32)}
