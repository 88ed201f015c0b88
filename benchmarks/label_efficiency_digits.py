"""Label efficiency on the bundled digits images: every spine strategy vs random, many seeds.

Runs the real loop (SQLite in memory, simulated annotator) through ``alloop.simulate`` and
writes ``results/digits_label_efficiency.{json,md,png}``. The baseline is random sampling in
the same run: the table reports each strategy's AUBC gain over random and how many seeds it
won (paired: the same seed gives every strategy the same initial labels and test split).

    python benchmarks/label_efficiency_digits.py --seeds 30
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from _machine import machine_info, provenance_note

from alloop.config import Component, dumps_toml, load_config
from alloop.pool.importer import import_pool
from alloop.pool.sources import scan_source
from alloop.report import plot_simulation
from alloop.simulate import SimulationSpec, simulate
from alloop.workspace import Workspace

RESULTS = Path(__file__).parent / "results"
STRATEGIES = ("margin", "least_confidence", "entropy", "coreset", "random")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--initial", type=int, default=20)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=-1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "alloop.toml").write_text(dumps_toml({
            "project": {"name": "digits-bench"},
            "pool": {"source": {"type": "bundled", "name": "digits"}},
        }))
        cfg, _ = load_config(Path(tmp))
        ws = Workspace(cfg)
        ws.ensure_project()
        import_pool(ws.engine, ws.name, scan_source(cfg.pool.source, ws.work_dir), test_fraction=0.0)
        spec = SimulationSpec(
            strategies=tuple(Component(name=s) for s in STRATEGIES), seeds=tuple(range(args.seeds)),
            initial_size=args.initial, batch_size=args.batch, rounds=args.rounds, test_fraction=0.3,
        )
        t0 = time.perf_counter()
        result = simulate(ws, spec, n_jobs=args.jobs)
        seconds = time.perf_counter() - t0
        ws.close()

    rows = result.table()
    by = result.by_strategy()
    base = {r.seed: r.aubc for r in by["random"]}
    for row in rows:
        runs = by[row["strategy"]]
        diff = np.array([r.aubc - base[r.seed] for r in runs])
        row["gain_vs_random"] = float(diff.mean())
        row["seeds_won_vs_random"] = int((diff > 0).sum())
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(__file__),
        "protocol": f"digits 1,797 images (8x8 pixels), 30% held out per seed, logistic regression, "
                    f"{args.initial} random labels then {args.rounds - 1} rounds of {args.batch}, "
                    f"{args.seeds} seeds, simulated annotator without noise",
        "seconds": round(seconds, 1),
    }
    (args.out / "digits_label_efficiency.json").write_text(json.dumps({"meta": meta, "table": rows}, indent=2))
    plot_simulation(result, args.out / "digits_label_efficiency.png", f"digits: {args.seeds} seeds per strategy")
    lines = [
        "# Label efficiency on digits", "", f"{meta['protocol']}.", "",
        (f"Run {meta['date']} on {meta['machine']['cpu']} ({meta['machine']['logical_cores']} cores), "
         f"{meta['seconds']} s; {provenance_note(meta['machine'])}."), "",
        "| strategy | AUBC mean | std | min | max | final acc | gain vs random | seeds won |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['aubc_mean']:.4f} | {r['aubc_std']:.4f} | {r['aubc_min']:.4f} | {r['aubc_max']:.4f} "
            f"| {r['final_acc_mean']:.4f} | {r['gain_vs_random']:+.4f} | {r['seeds_won_vs_random']}/{r['runs']} |"
        )
    (args.out / "digits_label_efficiency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
