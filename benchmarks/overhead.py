"""What alloop's orchestration costs on top of the arithmetic it runs: alloop against the same
rounds written directly with the same library calls, in one run, as ratios.

(a) ``alloop simulate`` at batch size 1 on the bundled breast-cancer table (RBF SVC, margin): the
    time per round of the real loop (SQLite in memory, simulated annotator) against the same loop
    written directly with scikit-learn; both give the same accuracy at every round (same picks).
    Both run warm (one short untimed run each first); the best of three timed runs of each, in
    turn. A simulation's setup (its in-memory database, the pool copied in) counts in its rounds.
(b) One round on a pool of ``--n`` vectors (d = ``--d``): train a logistic regression on round 0's
    100 random labels, score the pool, select 1,000 by margin, push them to the simulated annotator
    and collect the labels; against the direct arithmetic (scale + fit on the same 100 rows,
    ``predict_proba`` over the candidates in chunks, margin top-k), which must pick the same samples.
(c) ``alloop import`` of those vectors (``.npy`` + labels ``.npy``): rows per second, peak memory,
    and the disk used (the pool is stored once).

Each alloop phase of (b) and (c) runs in its own process, so its peak RSS is its own.

    python benchmarks/overhead.py                 # n = 1e6, d = 256, 100 simulated rounds
    python benchmarks/overhead.py --n 100000 --rounds 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, provenance_note

RESULTS = Path(__file__).parent / "results"
SEED = 0
REPEATS = 3  # (a): timed runs of each side, the best kept


# -- (a) simulate at batch size 1 -----------------------------------------------------------------

def part_a(rounds: int) -> dict:
    from threadpoolctl import threadpool_limits

    from alloop.config import Component, dumps_toml, load_config
    from alloop.pool.importer import import_pool
    from alloop.pool.sources import scan_source
    from alloop.simulate import SimulationSpec, simulate
    from alloop.workspace import Workspace

    svc = {"estimator": "sklearn.svm.SVC", "params": {"probability": True}, "scale": True}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "alloop.toml").write_text(dumps_toml({
            "project": {"name": "overhead-a"},
            "pool": {"source": {"type": "bundled", "name": "breast_cancer"}},
            "features": {"name": "vector"},
            "learner": {"name": "sklearn", "params": svc},
        }))
        cfg, _ = load_config(Path(tmp))
        ws = Workspace(cfg)
        ws.ensure_project()
        import_pool(ws.engine, ws.name, scan_source(cfg.pool.source, ws.work_dir), test_fraction=0.0)
        spec = SimulationSpec(strategies=(Component(name="margin"),), seeds=(SEED,), initial_size=20,
                              batch_size=1, rounds=rounds, test_fraction=0.3)
        # both sides warm (modules imported, caches filled) before anything is timed; then the best
        # of REPEATS runs each, alternating, so that a burst of load on the machine hits neither alone
        simulate(ws, replace(spec, rounds=3), n_jobs=1)
        with threadpool_limits(1):
            _direct_simulation(3)
        alloop_times, direct_times = [], []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            run = simulate(ws, spec, n_jobs=1).runs[0]
            alloop_times.append(time.perf_counter() - t0)
            with threadpool_limits(1):  # as the simulation's workers
                t0 = time.perf_counter()
                direct_acc = _direct_simulation(rounds)
                direct_times.append(time.perf_counter() - t0)
        ws.close()
    alloop_s, direct_s = min(alloop_times), min(direct_times)
    same = np.allclose(direct_acc, run.accuracy, rtol=0, atol=1e-12) and len(direct_acc) == len(run.accuracy)
    return {
        "rounds": rounds, "models": len(run.accuracy), "alloop_s": alloop_s, "direct_s": direct_s,
        "alloop_ms_per_round": 1000 * alloop_s / rounds, "direct_ms_per_round": 1000 * direct_s / rounds,
        "ratio": alloop_s / direct_s, "same_accuracy_every_round": bool(same),
        "alloop_runs_s": alloop_times, "direct_runs_s": direct_times,
        "final_accuracy": run.accuracy[-1],
    }


def _direct_simulation(rounds: int) -> list[float]:
    """The same simulation written with scikit-learn: same split, same cold start, same models."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from alloop.pool.base import row_keys
    from alloop.pool.importer import in_test_split
    from alloop.rng import derive_rng, derive_seed
    from alloop.strategies._scores import margin, top_k

    data = load_breast_cancer()
    X, y = data.data.astype(np.float32), data.target
    keys = row_keys("breast_cancer", len(X))
    test = np.array([in_test_split(SEED, k, 0.3) for k in keys])
    pool = np.flatnonzero(~test)
    Xp, yp, Xt, yt = X[pool], y[pool], X[test], y[test]
    labeled = np.zeros(len(pool), dtype=bool)
    cand = np.flatnonzero(~labeled)
    u = derive_rng(SEED, "round", 0, "select").random(cand.size)  # the random cold start
    labeled[cand[top_k(u, 20)]] = True
    acc = []
    for number in range(1, rounds):
        model = make_pipeline(StandardScaler(), SVC(probability=True,
                                                    random_state=derive_seed(SEED, ("round", number), "learner")))
        model.fit(Xp[labeled], yp[labeled])
        acc.append(float(np.mean(np.argmax(model.predict_proba(Xt), axis=1) == yt)))
        proba = model.predict_proba(Xp)
        cand = np.flatnonzero(~labeled)
        labeled[cand[top_k(margin(proba[cand]), 1)]] = True
    model = make_pipeline(StandardScaler(), SVC(probability=True, random_state=derive_seed(SEED, "final", "learner")))
    model.fit(Xp[labeled], yp[labeled])
    acc.append(float(np.mean(np.argmax(model.predict_proba(Xt), axis=1) == yt)))
    return acc


# -- (b) and (c): a large vectors pool --------------------------------------------------------------

def make_pool(folder: Path, n: int, d: int) -> None:
    """Ten Gaussian classes in d dimensions (float32), written in blocks (bounded memory)."""
    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((10, d)).astype(np.float32) * 0.6
    X = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, d))
    y = rng.integers(0, 10, n)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        X[start:stop] = centres[y[start:stop]] + rng.standard_normal((stop - start, d), dtype=np.float32)
    X.flush()
    del X
    np.save(folder / "labels.npy", np.array([f"c{v}" for v in y]))
    (folder / "alloop.toml").write_text(f"""
[project]
name = "overhead-b"
seed = {SEED}

[pool.source]
type = "vectors"
path = "vectors.npy"
labels_path = "labels.npy"

[features]
name = "vector"

[learner]
name = "sklearn"
params = {{ estimator = "sklearn.linear_model.LogisticRegression", params = {{ max_iter = 200 }}, scale = true }}

[strategy]
name = "margin"

[loop]
initial_size = 100
batch_size = 1000
max_rounds = 2
save_models = false
""")


def child(phase: str, folder: Path, out: Path) -> None:
    """Run one phase in this process and write its time and peak RSS to ``out``."""
    os.chdir(folder)
    info: dict = {}
    if phase == "import":
        from alloop.cli.main import app

        t0 = time.perf_counter()
        try:
            app(["import"], standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                raise
        info["seconds"] = time.perf_counter() - t0
    else:
        from alloop.config import load_config
        from alloop.loop.controller import Controller
        from alloop.workspace import Workspace

        cfg, _ = load_config(folder)
        ws = Workspace(cfg)
        ctl = Controller(ws)
        t0 = time.perf_counter()
        ctl.run(rounds_to_close=1)
        info["round0_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        steps = []
        with ctl:
            while True:
                t = time.perf_counter()
                r = ctl.tick()
                steps.append({"action": r.action, "seconds": time.perf_counter() - t})
                if r.action == "closed" or r.finished or not r.progressed:
                    break
        info["round1_s"] = time.perf_counter() - t0
        info["round1_steps"] = steps
        ws.close()
    info["peak_rss_mib"] = peak_rss_mib()
    out.write_text(json.dumps(info))


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    with open("/proc/self/status") as fh:
        kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    return kb / 1024


def _run_child(phase: str, folder: Path) -> dict:
    out = folder / f"{phase}.json"
    subprocess.run([sys.executable, __file__, "--child", phase, str(folder), str(out)], check=True)
    return json.loads(out.read_text())


def _disk(folder: Path) -> dict:
    def size(p: Path) -> int:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else (
            p.stat().st_size if p.exists() else 0)

    work = folder / ".alloop"
    return {"source_mib": size(folder / "vectors.npy") / 2**20,
            "database_mib": sum(size(f) for f in work.glob("alloop.db*")) / 2**20,
            "pool_mib": size(work / "pool") / 2**20, "cache_mib": size(work / "cache") / 2**20}


def _direct_round(folder: Path) -> tuple[float, list[int], list[int]]:
    """Round 1's arithmetic written directly: the same 100 labels, the same picks expected."""
    import sqlite3

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from alloop.rng import derive_seed
    from alloop.strategies._scores import margin, top_k

    db = sqlite3.connect(folder / ".alloop" / "alloop.db")
    picks = {}
    for number in (0, 1):
        picks[number] = [int(k.rsplit("-", 1)[1]) for (k,) in db.execute(
            "SELECT s.key FROM selection x JOIN sample s ON s.id = x.sample_id JOIN round r ON r.id = x.round_id "
            "WHERE r.number = ? ORDER BY x.rank", (number,))]
    db.close()
    X = np.load(folder / "vectors.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    classes = sorted(set(labels[picks[0]].tolist()) | set(np.unique(labels).tolist()))
    y_of = {c: i for i, c in enumerate(classes)}
    t0 = time.perf_counter()
    lab = np.array(sorted(picks[0]))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200,
                                                               random_state=derive_seed(SEED, ("round", 1), "learner")))
    model.fit(X[lab], np.array([y_of[v] for v in labels[lab]]))
    cand = np.setdiff1d(np.arange(len(X)), lab)
    best_pos, best_score = [], []
    for start in range(0, cand.size, 65536):
        part = cand[start : start + 65536]
        p = np.zeros((part.size, len(classes)))
        p[:, model.classes_] = model.predict_proba(X[part[0] : part[-1] + 1][part - part[0]])
        s = margin(p)
        idx = top_k(s, min(1000, s.size))
        best_pos.append(part[idx])
        best_score.append(s[idx])
    pos, sc = np.concatenate(best_pos), np.concatenate(best_score)
    order = np.argsort(pos, kind="stable")
    chosen = pos[order][top_k(sc[order], 1000)]
    return time.perf_counter() - t0, [int(i) for i in chosen], picks[1]


def part_bc(n: int, d: int) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("ALLOOP_BENCH_TMP")) as tmp:
        folder = Path(tmp)
        make_pool(folder, n, d)
        imp = _run_child("import", folder)
        disk = _disk(folder)
        rnd = _run_child("round", folder)
        disk_after = _disk(folder)
        direct_s, direct_picks, alloop_picks = _direct_round(folder)
    c = {"n": n, "d": d, "seconds": imp["seconds"], "rows_per_s": n / imp["seconds"],
         "peak_rss_mib": imp["peak_rss_mib"], "disk_after_import": disk, "disk_after_round": disk_after,
         "source_mib": disk["source_mib"]}
    b = {"n": n, "d": d, "alloop_round1_s": rnd["round1_s"], "direct_s": direct_s,
         "ratio": rnd["round1_s"] / direct_s, "round0_s": rnd["round0_s"], "steps": rnd["round1_steps"],
         "peak_rss_mib": rnd["peak_rss_mib"], "same_picks": direct_picks == alloop_picks,
         "same_pick_set": sorted(direct_picks) == sorted(alloop_picks)}
    return b, c


def report(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Orchestration overhead: alloop against the same arithmetic written directly",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} cores, {m['ram_gib']} GiB; {provenance_note(m)}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_start'])}.",
        "",
        "| measure | alloop | direct | ratio | target |",
        "|---|---|---|---|---|",
    ]
    a = res.get("a")
    if a:
        lines.append(f"| (a) simulate, batch 1, breast cancer, RBF SVC, margin ({a['rounds']} rounds) | "
                     f"{a['alloop_ms_per_round']:.1f} ms/round | {a['direct_ms_per_round']:.1f} ms/round | "
                     f"{a['ratio']:.2f}x | <= 3x |")
    b, c = res.get("b"), res.get("c")
    if b:
        lines.append(f"| (b) one round, N = {b['n']:,}, d = {b['d']} (train, score, select 1,000, push, collect) | "
                     f"{b['alloop_round1_s']:.2f} s | {b['direct_s']:.2f} s | {b['ratio']:.2f}x | <= 3x |")
    if c:
        lines.append(f"| (c) `alloop import` of N = {c['n']:,} vectors | {c['rows_per_s']:,.0f} rows/s "
                     f"({c['seconds']:.1f} s) | | | >= 100,000 rows/s |")
    lines.append("")
    if a:
        lines.append(f"(a): same held-out accuracy after every round as the direct loop: "
                     f"{a['same_accuracy_every_round']} ({a['models']} models, final accuracy {a['final_accuracy']:.4f}).")
    if b:
        lines.append(f"(b): the direct arithmetic picks the same 1,000 samples in the same order: {b['same_picks']} "
                     f"(same set: {b['same_pick_set']}). Peak RSS of the `alloop run` process: "
                     f"{b['peak_rss_mib']:.0f} MiB. Steps: "
                     + ", ".join(f"{s['action']} {s['seconds']:.2f} s" for s in b["steps"]) + ".")
    if c:
        dk = c["disk_after_round"]
        lines.append(f"(c): peak RSS of the import process {c['peak_rss_mib']:.0f} MiB. Disk for a "
                     f"{c['source_mib']:.0f} MiB source: database {dk['database_mib']:.0f} MiB, pool "
                     f"{dk['pool_mib']:.0f} MiB, feature cache {dk['cache_mib']:.0f} MiB (after the rounds).")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--parts", default="a,b")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", nargs=3, metavar=("PHASE", "FOLDER", "OUT"))
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    res: dict = {"machine": machine_info(__file__)}
    if "a" in args.parts:
        res["a"] = part_a(args.rounds)
        print(json.dumps(res["a"], indent=1))
    if "b" in args.parts:
        res["b"], res["c"] = part_bc(args.n, args.d)
        print(json.dumps({"b": res["b"], "c": res["c"]}, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "overhead.md").write_text(report(res))
    print(report(res))


if __name__ == "__main__":
    main()
