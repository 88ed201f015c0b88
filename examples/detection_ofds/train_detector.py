#!/usr/bin/env python
"""A small two-stage (R-CNN-like) detector, the training script of the detection example.

numpy, scipy, scikit-learn and Pillow only; seconds on a hundred 128x128 canvases.
1. Class-agnostic proposals: connected components of the pixels above a few thresholds (fractions
   of the image maximum), also after a small erosion (it splits touching objects).
2. A crop classifier: boxes scaled into 28x28, an MLP trained on the true boxes (and jittered
   copies) and on the training images' proposals (on an object: its class; else "background").
3. Detections: the non-background proposals, scored by their class probability, deduplicated.

Contract (``alloop.learners.command``): read ``--train`` (COCO, ``file_name`` = absolute path) and
``--predict`` (COCO, no annotations); write ``--output`` (COCO results: ``[{"image_id",
"category_id", "bbox": [x, y, w, h], "score"}]``, ids of the predict file) and ``--metrics`` (JSON
numbers). Flags default to ``$ALLOOP_TRAIN``, ``$ALLOOP_PREDICT``...; ``$ALLOOP_SEED`` seeds.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # small matrices: one BLAS thread
    os.environ.setdefault(_var, "1")  # is faster than several fighting over busy cores (set before numpy loads)

import numpy as np
from PIL import Image
from scipy import ndimage
from sklearn.dummy import DummyClassifier
from sklearn.neural_network import MLPClassifier

BACKGROUND = "__background__"
SIDE, INNER = 28, 20  # crops are scaled into INNER x INNER, centred in SIDE x SIDE (as MNIST)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", default=env("ALLOOP_TRAIN"), help="COCO training file [$ALLOOP_TRAIN]")
    p.add_argument("--predict", default=env("ALLOOP_PREDICT"), help="COCO images to detect in [$ALLOOP_PREDICT]")
    p.add_argument("--output", default=env("ALLOOP_OUTPUT"), help="COCO results list to write [$ALLOOP_OUTPUT]")
    p.add_argument("--metrics", default=env("ALLOOP_METRICS"), help="metrics JSON to write [$ALLOOP_METRICS]")
    p.add_argument("--seed", type=int, default=int(env("ALLOOP_SEED", "0")), help="[$ALLOOP_SEED, 0]")
    p.add_argument("--thresholds", type=lambda s: [float(t) for t in s.split(",")], default=[0.25, 0.5],
                   help="ink thresholds, fractions of the image max (default 0.25,0.5)")
    p.add_argument("--min-area", type=int, default=15, help="drop components of fewer pixels")
    p.add_argument("--jitter", type=int, default=2, help="jittered copies of each training box")
    args = p.parse_args(argv)
    missing = [f"--{k}" for k in ("train", "predict", "output") if not getattr(args, k)]
    if missing:
        p.error(f"{', '.join(missing)} not given (nor $ALLOOP_TRAIN/$ALLOOP_PREDICT/$ALLOOP_OUTPUT)")
    return args


def load_coco(path: str) -> tuple[list[dict], dict[int, list[dict]], dict[int, str]]:
    """Images, annotations by image id, category names by id."""
    coco = json.loads(Path(path).read_text(encoding="utf-8"))
    by_image: dict[int, list[dict]] = {}
    for ann in coco.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    return coco["images"], by_image, {c["id"]: c["name"] for c in coco["categories"]}


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xywh box of ``a`` with every box of ``b``."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    iw = np.minimum(a[:, None, 0] + a[:, None, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, None, 0], b[:, 0])
    ih = np.minimum(a[:, None, 1] + a[:, None, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, None, 1], b[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    return inter / (a[:, None, 2] * a[:, None, 3] + b[:, 2] * b[:, 3] - inter)


def components(mask: np.ndarray, min_area: int, grow: int = 0) -> list[list[int]]:
    """Boxes of the 8-connected components of ``mask``, each grown by ``grow`` pixels."""
    labels, _ = ndimage.label(mask, np.ones((3, 3)))
    h, w = mask.shape
    boxes = []
    for i, sl in enumerate(ndimage.find_objects(labels)):
        if (labels[sl] == i + 1).sum() < min_area:
            continue  # noise speck
        x0, y0 = max(sl[1].start - grow, 0), max(sl[0].start - grow, 0)
        x1, y1 = min(sl[1].stop + grow, w), min(sl[0].stop + grow, h)
        boxes.append([x0, y0, x1 - x0, y1 - y0])
    return boxes


def propose(img: np.ndarray, fractions: list[float], min_area: int) -> np.ndarray:
    """Class-agnostic boxes (n, 4): components at each threshold, also after a 2x2 erosion."""
    boxes: list[list[int]] = []
    for fraction in fractions:
        mask = img > fraction * img.max()
        boxes += components(mask, min_area)
        boxes += components(ndimage.binary_erosion(mask, np.ones((2, 2))), min_area // 2, grow=1)
    kept: list[list[int]] = []
    for box in boxes:  # drop near-duplicates (the same object found twice)
        if not kept or iou([box], kept).max() < 0.9:
            kept.append(box)
    return np.array(kept, float).reshape(-1, 4)


def features(img: np.ndarray, box: np.ndarray, floor: float) -> np.ndarray:
    """The box's pixels (background zeroed) scaled into 28x28, plus its shape."""
    x, y, w, h = (round(float(v)) for v in box)
    w, h = max(w, 1), max(h, 1)
    crop = np.where(img[y : y + h, x : x + w] > floor, img[y : y + h, x : x + w], 0).astype(np.float32)
    s = INNER / max(crop.shape)
    nw, nh = max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))
    small = np.asarray(Image.fromarray(crop, mode="F").resize((nw, nh), Image.Resampling.BILINEAR))
    out = np.zeros((SIDE, SIDE), np.float32)
    ox, oy = (SIDE - nw) // 2, (SIDE - nh) // 2
    out[oy : oy + nh, ox : ox + nw] = small
    out /= max(float(out.max()), 1e-6)
    return np.concatenate([out.ravel(), [np.log(w / h), w / SIDE, h / SIDE]])


def read_gray(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32)


def training_set(args, rng) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Crops of the truth (and jittered copies) and of the proposals, with their classes."""
    images, anns, names = load_coco(args.train)
    X, y, found, n_objects = [], [], 0, 0
    for im in images:
        img = read_gray(im["file_name"])
        floor = min(args.thresholds) * img.max()
        truth = np.array([a["bbox"] for a in anns.get(im["id"], [])], float).reshape(-1, 4)
        classes = [names[a["category_id"]] for a in anns.get(im["id"], [])]
        n_objects += len(truth)
        for box, name in zip(truth, classes):
            for k in range(args.jitter + 1):
                jb = box + (rng.normal(0, 1.0, 4) if k else 0)  # a copy shifted/resized by ~1 px
                jb[:2] = np.clip(jb[:2], 0, [img.shape[1] - 4, img.shape[0] - 4])
                jb[2:] = np.clip(jb[2:], 4, [img.shape[1] - jb[0], img.shape[0] - jb[1]])
                X.append(features(img, jb, floor))
                y.append(name)
        props = propose(img, args.thresholds, args.min_area)
        overlap = iou(props, truth) if len(truth) else np.zeros((len(props), 1))
        found += int((overlap.max(axis=0) >= 0.5).sum()) if len(truth) and len(props) else 0
        for box, row in zip(props, overlap):
            best = int(row.argmax())  # R-CNN: a proposal on an object learns its class, one on
            tag = classes[best] if row[best] >= 0.5 else BACKGROUND if row[best] < 0.3 else None
            if tag is not None:  # nothing (or on a part, or on two objects) is background
                X.append(features(img, box, floor))
                y.append(tag)
    return np.array(X, np.float32).reshape(len(X), -1), np.array(y), {  # recall: truth a proposal found
        "n_train_images": len(images), "n_train_objects": n_objects, "proposal_recall_train": found / max(n_objects, 1)}


def detect(clf, img: np.ndarray, args) -> list[tuple[list[float], str, float]]:
    """(box, class, score) of the objects of one image, best first."""
    props = propose(img, args.thresholds, args.min_area)
    if not len(props):
        return []
    floor = min(args.thresholds) * img.max()
    proba = clf.predict_proba(np.stack([features(img, b, floor) for b in props]))
    classes = list(clf.classes_)
    fg = [j for j, c in enumerate(classes) if c != BACKGROUND]
    best = np.array(fg)[proba[:, fg].argmax(axis=1)]
    score = proba[np.arange(len(props)), best]
    out: list[tuple[list[float], str, float]] = []
    for i in np.argsort(-score, kind="stable"):
        if classes[int(proba[i].argmax())] == BACKGROUND or (out and iou([props[i]], [o[0] for o in out]).max() >= 0.5):
            continue  # background, or a worse box on an object already found (non-maximum suppression)
        out.append((props[i].tolist(), classes[best[i]], float(score[i])))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    X, y, metrics = training_set(args, np.random.default_rng(args.seed))
    if not np.isin(y, [BACKGROUND], invert=True).any():
        print(f"{args.train}: no labeled box to learn from; label at least one object.", file=sys.stderr)
        return 2
    single = len(set(y)) < 2  # a single class: nothing to tell apart
    mlp = MLPClassifier((128,), alpha=1e-3, max_iter=300, random_state=args.seed)
    clf = (DummyClassifier(strategy="prior") if single else mlp).fit(X, y)
    metrics["train_accuracy"] = float((clf.predict(X) == y).mean())
    images, _, names = load_coco(args.predict)
    category_of = {name: cid for cid, name in names.items()}
    results = []
    for im in images:
        for box, name, score in detect(clf, read_gray(im["file_name"]), args):
            results.append({"image_id": im["id"], "category_id": category_of[name],
                            "bbox": [round(v, 2) for v in box], "score": round(score, 5)})
    Path(args.output).write_text(json.dumps(results), encoding="utf-8")
    metrics.update(n_predict_images=len(images), n_detections=len(results),
                   seconds=round(time.perf_counter() - start, 3))
    if args.metrics:
        Path(args.metrics).write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
