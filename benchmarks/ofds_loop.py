"""OFDS in the loop: detection sessions with a retrained detector, OFDS vs random vs coreset, over seeds.

    python benchmarks/ofds_loop.py --seeds 8

Per seed: the detection example's pool (400 canvases of real MNIST digits, digit 7 rare at
1.5% of the objects, noisy autolabels; ``examples/detection_ofds/prepare_pool.py``) and three
sessions of the example's project (``examples/detection_ofds/alloop.toml``: 4 rounds of 20
images, the simulated annotator, ``train_detector.py`` retrained each round by the command
learner, proposals from the model after round 0), differing only in the strategy (cold start
and later rounds): ``ofds`` (uniform allocation), ``random``, ``coreset`` (k-center on
whole-canvas pixels). Reported: held-out mAP@0.5 of each round's detector (mean ± sd over
seeds), its mean over the rounds (area under the budget curve), and the rare digit's objects
inside the labeled images; the baseline in the same run is random (ratios).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import tomllib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLE = ROOT / "examples" / "detection_ofds"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from _machine import machine_info, now, provenance_note

STRATEGIES = ("ofds", "random", "coreset")


def session(folder: Path, data: Path, strategy: str) -> dict:
    """One persisted session of the example project with ``strategy``; its per-round figures."""
    from sqlmodel import select

    from alloop.config import dumps_toml, load_config
    from alloop.loop.controller import Controller
    from alloop.pool.importer import import_pool
    from alloop.pool.sources import scan_source
    from alloop.store.engine import session_scope
    from alloop.store.models import ModelVersion, Round, Sample, Selection
    from alloop.workspace import Workspace

    cfg = tomllib.loads((EXAMPLE / "alloop.toml").read_text())
    cfg["pool"]["source"].update(path=str(data / "pool" / "images"), annotations=str(data / "pool" / "annotations.json"))
    cfg["proposals"]["path"] = str(data / "autolabels.jsonl")
    cfg["learner"]["params"]["command"] = f"{{python}} {EXAMPLE / 'train_detector.py'}"
    if strategy != "ofds":
        cfg["strategy"] = cfg["cold_start"] = {"name": strategy}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alloop.toml").write_text(dumps_toml(cfg))
    config, _ = load_config(folder)
    ws = Workspace(config)
    try:
        ws.ensure_project()
        import_pool(ws.engine, ws.name, scan_source(config.pool.source, ws.work_dir), test_fraction=config.pool.test_fraction)
        results = Controller(ws).run()
        assert results[-1].finished, results[-1]
        with session_scope(ws.engine) as s:
            models = s.exec(select(ModelVersion).order_by(ModelVersion.id)).all()
            curve = [(m.n_labels, float(m.metrics["map50"])) for m in models]
            by_round: dict[int, int] = {}
            rare = []
            for rnd in s.exec(select(Round).order_by(Round.number)).all():
                picked = s.exec(select(Sample).join(Selection, Selection.sample_id == Sample.id)
                                .where(Selection.round_id == rnd.id)).all()
                by_round[rnd.number] = sum(b["label"] == "7" for smp in picked for b in smp.data.get("reference_boxes", []))
            rare = list(np.cumsum([by_round[k] for k in sorted(by_round)]))
            pool_rare = sum(b["label"] == "7" for smp in s.exec(select(Sample).where(Sample.split == "pool")).all()
                            for b in smp.data.get("reference_boxes", []))
    finally:
        ws.close()
    return {"curve": curve, "rare_labeled": [int(x) for x in rare], "rare_in_pool": int(pool_rare)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--work", type=Path, default=HERE / ".cache" / "ofds_loop")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ofds_loop")
    args = ap.parse_args()
    sys.path.insert(0, str(EXAMPLE))
    from alloop.datasets.detection import make_detection_pool
    from alloop.datasets.noisy_autolabels import write_autolabels_from_truth

    info = machine_info(__file__)
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {s: [] for s in STRATEGIES}
    for seed in range(args.seeds):
        data = args.work / f"seed-{seed}" / "data"
        pool = make_detection_pool(data / "pool", n_images=400, source="mnist", class_names=list("0123457"),
                                   rare_class="7", rare_fraction=0.015, objects_per_image=(1, 4), seed=seed, overwrite=True)
        write_autolabels_from_truth(pool.path, data / "autolabels.jsonl", seed=seed, miss_rate=0.1,
                                    false_positive_rate=0.1, label_confusion=0.1)
        for strategy in STRATEGIES:
            folder = args.work / f"seed-{seed}" / strategy
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
            t0 = time.perf_counter()
            r = session(folder, data, strategy)
            r["seconds"] = round(time.perf_counter() - t0, 1)
            runs[strategy].append(r)
            print(f"seed {seed} {strategy:>8}: mAP50 {[round(m, 3) for _, m in r['curve']]}, rare labeled "
                  f"{r['rare_labeled'][-1]}/{r['rare_in_pool']} ({r['seconds']} s)", flush=True)

    labels = [n for n, _ in runs["random"][0]["curve"]]
    table, summary = [], {}
    for strategy in STRATEGIES:
        maps = np.array([[m for _, m in r["curve"]] for r in runs[strategy]])
        rare = np.array([r["rare_labeled"][-1] / max(r["rare_in_pool"], 1) for r in runs[strategy]])
        hit1 = np.mean([r["rare_labeled"][0] > 0 for r in runs[strategy]])
        summary[strategy] = {"map50_mean": maps.mean(0).round(4).tolist(), "map50_sd": maps.std(0).round(4).tolist(),
                             "aubc": round(float(maps.mean()), 4), "aubc_sd": round(float(maps.mean(1).std()), 4),
                             "rare_share": round(float(rare.mean()), 4), "rare_hit_round0": round(float(hit1), 3)}
    base = summary["random"]
    lines = [
        "# OFDS in the loop: detection sessions with a retrained detector",
        "",
        f"Generated by `benchmarks/ofds_loop.py --seeds {args.seeds}`.",
        "",
        f"- machine: {info['cpu']}, {info['logical_cores']} logical cores, {info['ram_gib']} GiB RAM; Python "
        f"{info['python']}, numpy {info['numpy']}",
        f"- date: {now()} ({provenance_note(info)}); load average at start "
        f"{', '.join(f'{x:.2f}' for x in info['loadavg_start'])}; wall time {time.perf_counter() - started:.0f} s",
        "- per seed: 400 canvases (1-4 real MNIST digits each; digits 0-5 and a rare 7 at 1.5% of the objects), 25% "
        "held out; noisy autolabels (10% missed, 10% relabeled, 10% spurious); 4 rounds of 20 images; the simulated "
        "annotator gives the true boxes; `train_detector.py` retrained each round by the command learner; proposals "
        "= the autolabels in round 0, the detector's detections after",
        "- mAP@0.5 on the held-out canvases (pycocotools); *AUBC* = mean mAP over the 4 models (20-80 labeled images); "
        "*rare share* = share of the pool's rare objects inside the 80 labeled images; *rare in round 0* = seeds whose "
        "first 20 images hold a rare object",
        "",
        "| strategy | " + " | ".join(f"mAP50 @{n}" for n in labels) + " | AUBC | vs random | rare share | vs random | rare in round 0 |",
        "|---|" + "---|" * (len(labels) + 5),
    ]
    for strategy in STRATEGIES:
        s = summary[strategy]
        cells = [f"{m:.3f} ± {sd:.3f}" for m, sd in zip(s["map50_mean"], s["map50_sd"])]
        lines.append(
            f"| {strategy} | " + " | ".join(cells)
            + f" | {s['aubc']:.3f} ± {s['aubc_sd']:.3f} | {s['aubc'] / base['aubc']:.3f}x | {s['rare_share']:.2f} | "
            f"{s['rare_share'] / max(base['rare_share'], 1e-9):.2f}x | {s['rare_hit_round0'] * args.seeds:.0f}/{args.seeds} |"
        )
        table.append(s)
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": info, "summary": summary, "runs": runs}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for strategy in STRATEGIES:
        s = summary[strategy]
        m, sd = np.array(s["map50_mean"]), np.array(s["map50_sd"])
        ax1.plot(labels, m, marker="o", label=strategy)
        ax1.fill_between(labels, m - sd, m + sd, alpha=0.15)
    ax1.set_xlabel("labeled images")
    ax1.set_ylabel("held-out mAP@0.5")
    ax1.set_title(f"retrained detector ({args.seeds} seeds, ±1 sd)")
    ax1.grid(alpha=0.3)
    ax1.legend()
    ax2.bar(STRATEGIES, [summary[s]["rare_share"] for s in STRATEGIES], color=["C0", "C1", "C2"])
    ax2.set_ylabel("share of the rare digit's objects labeled")
    ax2.set_title("rare class (1.5% of objects) after 80 images")
    ax2.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    main()
