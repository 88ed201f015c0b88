"""ActiveKD label efficiency on real images: Fashion-MNIST, EfficientNet-Lite0 features.

The PCoreSet paper's protocol, scaled to 2 CPU cores: one labeled example per class to start,
C = 10 queries per round, 10 query rounds, 10 seeds; strategies pcoreset, coreset, entropy and
random, each **with** knowledge distillation (the ActiveKD student: CE head + KD head, alpha
0.5, T = 2) and **without** (the same student with the KD term and head switched off). Every
run is the real alloop loop (``alloop.simulate``) with the simulated annotator.

Teacher. No CLIP weights can be loaded here (no network, none ship in a package), so the
teacher is a documented **surrogate** served through the same teacher protocol (the
``predictions`` teacher): a logistic regression trained on 5 labeled images per class that are
*not* part of the pool, its probabilities softened by a temperature. Its own accuracy is
reported next to the results, like a zero-shot baseline. A real run uses ``clip_zeroshot``.

Needs the feature cache made by ``benchmarks/data/fmnist_features.py``.

    python benchmarks/activekd_fashion_mnist.py --seeds 10 --rounds 11
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from _machine import machine_info, provenance_note

from alloop.config import Component, dumps_toml, load_config
from alloop.pool.importer import import_pool
from alloop.pool.sources import scan_source
from alloop.simulate import SimulationSpec, simulate
from alloop.workspace import Workspace

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
STRATEGIES = ("pcoreset", "coreset", "entropy", "random")


def load_cache(folder: Path, features: str | None) -> tuple[np.ndarray, np.ndarray, list[str], list[str], dict]:
    meta = json.loads((folder / "meta.json").read_text())
    name = features or next(iter(meta["features"]))
    meta["used_features"] = name
    X = np.load(folder / meta["features"][name]["file"])
    y = np.load(folder / "labels.npy")
    keys = (folder / "keys.txt").read_text().split()
    names = meta.get("class_names") or [str(c) for c in range(int(y.max()) + 1)]
    return X, y, keys, names, meta


def surrogate_teacher(X: np.ndarray, y: np.ndarray, per_class: int, temperature: float, seed: int):
    """Logistic regression on ``per_class`` labeled rows per class (returned as excluded rows)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    train = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)])
    scaler = StandardScaler().fit(X)
    lr = LogisticRegression(max_iter=3000, C=0.1).fit(scaler.transform(X[train]), y[train])
    logits = lr.decision_function(scaler.transform(X)) / temperature
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True), train


def run(args: argparse.Namespace) -> dict:
    X, y, keys, names, meta = load_cache(args.cache, args.features)
    proba, teacher_train = surrogate_teacher(X, y, args.teacher_per_class, args.teacher_temperature, seed=12345)
    keep = np.setdiff1d(np.arange(len(y)), teacher_train)  # the teacher's own labels are not in the pool
    X, y, proba = X[keep], y[keep], proba[keep]
    keys = [keys[i] for i in keep]
    teacher_acc = float((proba.argmax(1) == y).mean())
    with tempfile.TemporaryDirectory(prefix="alloop-activekd-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "features.npy", X.astype(np.float32))
        (tmp / "labels.txt").write_text("\n".join(names[c] for c in y) + "\n")
        (tmp / "keys.txt").write_text("\n".join(keys) + "\n")
        np.savez(tmp / "teacher.npz", keys=np.array(keys), labels=np.array(names), proba=proba)
        (tmp / "alloop.toml").write_text(dumps_toml({
            "project": {"name": "fmnist-activekd", "labels": names},
            "pool": {"source": {"type": "vectors", "path": "features.npy", "labels_path": "labels.txt", "keys_path": "keys.txt"}},
            "features": {"name": "vector"},
            "learner": {"name": "kd_student", "params": {"epochs": args.epochs}},
            "teacher": {"name": "predictions", "params": {"path": "teacher.npz"}},
        }))
        cfg, _ = load_config(tmp)
        ws = Workspace(cfg)
        ws.ensure_project()
        import_pool(ws.engine, ws.name, scan_source(cfg.pool.source, ws.work_dir), test_fraction=0.0)
        out = {}
        for mode, params in (("with KD", {"epochs": args.epochs}),
                             ("without KD", {"epochs": args.epochs, "kd_weight": 0.0, "alpha": 0.0})):
            spec = SimulationSpec(
                strategies=tuple(Component(name=s) for s in STRATEGIES), seeds=tuple(range(args.seeds)),
                batch_size=len(names), rounds=args.rounds, test_fraction=args.test_fraction,
                learner=Component(name="kd_student", params=params), initial_per_class=True,
            )
            t0 = time.perf_counter()
            out[mode] = (simulate(ws, spec, n_jobs=args.jobs), time.perf_counter() - t0)
            print(f"{mode}: {out[mode][1]:.0f} s", flush=True)
        ws.close()
    return {"results": out, "teacher_acc": teacher_acc, "n_pool": len(y), "meta": meta}


def figure(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120, sharey=True)
    for ax, (mode, (result, _)) in zip(axes, data["results"].items()):
        for name, runs in result.by_strategy().items():
            x = np.asarray(runs[0].n_labels)
            acc = np.array([r.accuracy for r in runs])
            style = {"color": "0.35", "linestyle": "--"} if name == "random" else {}
            (line,) = ax.plot(x, acc.mean(0), marker=".", label=name, **style)
            ax.fill_between(x, acc.mean(0) - acc.std(0), acc.mean(0) + acc.std(0), color=line.get_color(), alpha=0.12)
        ax.axhline(data["teacher_acc"], color="k", linewidth=0.8, linestyle=":", label="surrogate teacher")
        ax.set_title(f"Fashion-MNIST, {mode}")
        ax.set_xlabel("labeled samples")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=HERE / ".cache" / "fmnist")
    ap.add_argument("--features", default=None, help="name of a feature set in the cache's meta.json")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=11, help="round 0 (one per class) + query rounds")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--teacher-per-class", type=int, default=5)
    ap.add_argument("--teacher-temperature", type=float, default=2.0)
    ap.add_argument("--jobs", type=int, default=-1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = run(args)
    rows = []
    for mode, (result, _seconds) in data["results"].items():
        base = {r.seed: r.aubc for r in result.by_strategy()["random"]}
        for row in result.table():
            runs = result.by_strategy()[row["strategy"]]
            diff = np.array([r.aubc - base[r.seed] for r in runs])
            rows.append({"mode": mode, **row, "gain_vs_random": float(diff.mean()), "seeds_won_vs_random": int((diff > 0).sum()),
                         "mean_accuracy_per_round": np.mean([r.accuracy for r in runs], axis=0).round(4).tolist()})
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(__file__)
    cpu = machine["cpu"]
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine,
            "seconds": round(time.perf_counter() - t0), "pool": data["n_pool"],
            "teacher_accuracy": round(data["teacher_acc"], 4), "features": data["meta"], "args": {
                k: str(v) for k, v in vars(args).items()}}
    (args.out / "activekd_fashion_mnist.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    figure(data, args.out / "activekd_fashion_mnist.png")
    lines = ["# ActiveKD on Fashion-MNIST (EfficientNet-Lite0 features, surrogate teacher)", "",
             f"{data['n_pool']} images (pool + per-seed test split of {args.test_fraction:.0%}), one label per class to "
             f"start, {len(data['results']['with KD'][0].by_strategy()['random'][0].n_labels) - 1} rounds of 10 queries, "
             f"{args.seeds} seeds. Surrogate teacher (logistic regression on {args.teacher_per_class} images per class "
             f"outside the pool, temperature {args.teacher_temperature}): accuracy {data['teacher_acc']:.4f}.",
             f"Run {meta['date']} on {cpu} ({os.cpu_count()} cores) in {meta['seconds']} s; {provenance_note(machine)}.", "",
             "| mode | strategy | AUBC | std | final acc | gain vs random | seeds won |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['strategy']} | {r['aubc_mean']:.4f} | {r['aubc_std']:.4f} | {r['final_acc_mean']:.4f} "
                     f"| {r['gain_vs_random']:+.4f} | {r['seeds_won_vs_random']}/{r['runs']} |")
    lines += ["", "Mean accuracy per round (labels 10, 20, ...):", ""]
    lines += [f"- {r['mode']}, {r['strategy']}: {r['mean_accuracy_per_round']}" for r in rows]
    (args.out / "activekd_fashion_mnist.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
