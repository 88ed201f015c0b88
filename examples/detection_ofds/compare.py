"""Per-class object coverage and mAP of finished detection projects, side by side.

    python compare.py PROJECT_DIR [PROJECT_DIR ...] [--out coverage.png]

For each project: how many of each class's pool objects lie in the images people labeled (the
ground truth of the labeled images, so missed proposals count too), the rare classes' share, and
the held-out mAP@0.5 of each round's detector. Writes a bar chart of the coverage.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from sqlmodel import select

from alloop.config import load_config
from alloop.report import learning_curve, project_status
from alloop.store.engine import session_scope
from alloop.store.models import Sample, Selection
from alloop.store.queries import get_project
from alloop.workspace import Workspace


def coverage(project_dir: Path) -> dict:
    cfg, _ = load_config(project_dir)
    ws = Workspace(cfg)
    try:
        with session_scope(ws.engine) as s:
            project = get_project(s, ws.name)
            pool = s.exec(select(Sample).where(Sample.project_id == project.id, Sample.split == "pool")).all()
            picked = set(s.exec(select(Selection.sample_id).where(Selection.project_id == project.id)).all())
            total = Counter(b["label"] for smp in pool for b in smp.data.get("reference_boxes", []))
            labeled = Counter(
                b["label"] for smp in pool if smp.id in picked for b in smp.data.get("reference_boxes", [])
            )
            labels = list(project.labels)
        status = project_status(ws.engine, ws.name)
        curve = learning_curve(ws.engine, ws.name)
    finally:
        ws.close()
    same = cfg.strategy.name == cfg.cold_start.name
    name = cfg.strategy.name if same else f"{cfg.cold_start.name}+{cfg.strategy.name}"
    return {"name": name, "labels": labels, "total": total, "labeled": labeled, "images": len(picked),
            "curve": curve, "final": (status["final_model"] or {}).get("accuracy")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("projects", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("coverage.png"))
    args = p.parse_args()
    runs = [coverage(d) for d in args.projects]
    labels = runs[0]["labels"]
    total = runs[0]["total"]
    print("objects of each class inside the labeled images (of all in the pool):")
    print(f"{'class':>8} {'pool':>5} " + " ".join(f"{r['name']:>24}" for r in runs))
    for lb in sorted(labels, key=lambda c: total[c]):
        print(f"{lb:>8} {total[lb]:>5} " + " ".join(f"{r['labeled'][lb]:>24}" for r in runs))
    for r in runs:
        maps = ", ".join(f"{n}: {m:.3f}" for n, m in r["curve"])
        print(f"{r['name']}: {r['images']} images labeled; mAP@0.5 by labeled images: {maps}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    order = sorted(labels, key=lambda c: total[c])
    x = np.arange(len(order))
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=120)
    for i, r in enumerate(runs):
        frac = [r["labeled"][c] / max(total[c], 1) for c in order]
        ax.bar(x + i * width, frac, width, label=r["name"])
    ax.set_xticks(x + width * (len(runs) - 1) / 2, [f"{c}\n({total[c]})" for c in order])
    ax.set_xlabel("class (objects in the pool), rarest first")
    ax.set_ylabel("share of the class's objects labeled")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
