"""How a round scales with the pool: import and one round at N = 1e5, 1e6, 1e7, local and on Ray.

For each N a pool of N vectors (d = ``--d``, ten Gaussian classes, float32) is imported once
(``alloop import``, its own process); then, for each strategy and backend, a copy of the project
(the database copied, the vector files hard-linked) runs round 0 (100 random picks, labelled by the
simulated annotator) and round 1 (train a logistic regression, score the pool, select 1,000, push,
collect) in its own process. Recorded: wall time of round 1 and of each of its steps, peak RSS of
that process (the driver), on Ray the largest RSS of any worker process or actor of the cluster
(sampled every 0.2 s), and per-row cost. Ray runs use a real local cluster (a head plus 1 or 2
worker nodes as separate processes, as the tests start it).

    python benchmarks/scale.py --n 100000 1000000 --strategies margin coreset --backends local ray1 ray2
    python benchmarks/scale.py --n 100000 1000000 10000000 --strategies margin coreset ideal ideal-seals \
        --max-n ideal=100000 ideal-seals=1000000 --skip coreset/ray1/10000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _machine import machine_info, provenance_note
from overhead import _disk, _run_child, make_pool, peak_rss_mib

RESULTS = Path(__file__).parent / "results"

#: strategies run with parameters, by the name the results use
VARIANTS: dict[str, tuple[str, dict]] = {
    "ideal-seals": ("ideal", {"subset": "seals"}),  # IDEAL on a SEALS subset of 100,000 rows (its default)
}


def round_child(folder: Path, out: Path) -> None:
    """Round 0, then connect the execution backend (timed apart: a served project connects once per
    process), then round 1 timed step by step; writes times and this process's peak RSS to ``out``."""
    import time

    from alloop.config import load_config
    from alloop.loop.controller import Controller
    from alloop.workspace import Workspace

    os.chdir(folder)
    cfg, _ = load_config(folder)
    ws = Workspace(cfg)
    ctl = Controller(ws)
    ctl.run(rounds_to_close=1)
    t0 = time.perf_counter()
    _ = ws.backend
    connect_s = time.perf_counter() - t0
    steps = []
    t0 = time.perf_counter()
    with ctl:
        while True:
            t = time.perf_counter()
            r = ctl.tick()
            steps.append({"action": r.action, "seconds": time.perf_counter() - t})
            if r.action == "closed" or r.finished or not r.progressed:
                break
    info = {"round1_s": time.perf_counter() - t0, "round1_steps": steps, "connect_s": connect_s,
            "peak_rss_mib": peak_rss_mib()}
    ws.close()
    out.write_text(json.dumps(info))


def _run_round(folder: Path, cluster: object | None = None) -> dict:
    """Round 0 and 1 in a child process; with a Ray cluster, its worker processes' peak memory too."""
    import subprocess

    out = folder / "round.json"
    sampler = _WorkerPeak(cluster) if cluster is not None else None
    try:
        subprocess.run([sys.executable, __file__, "--child", str(folder), str(out)], check=True)
    finally:
        if sampler is not None:
            sampler.stop()
    info = json.loads(out.read_text())
    if sampler is not None:
        info["worker_peak_rss_mib"] = sampler.peak_mib
    return info


class _WorkerPeak:
    """The largest resident memory of any Ray worker process (task workers and actors) of a
    cluster, sampled every 0.2 s while a round runs (RSS, not a kernel high-water mark: a task
    worker outlives the round, and an actor's process is gone when it ends)."""

    def __init__(self, cluster: object) -> None:
        import threading

        self.cluster, self.peak_mib = cluster, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._done.wait(0.2):
            for pid in self.cluster._session_members():  # type: ignore[attr-defined]
                try:
                    p = psutil.Process(pid)
                    cmd = " ".join(p.cmdline())  # a worker titles itself "ray::IDLE", "ray::<task>", ...
                    if cmd.startswith("ray::") or "default_worker.py" in cmd:
                        self.peak_mib = max(self.peak_mib, p.memory_info().rss / 2**20)
                except (psutil.Error, OSError):
                    continue

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _copy_project(src: Path, dst: Path, strategy: str, execution: dict) -> None:
    """A copy of the imported project with another strategy / backend (vector files hard-linked)."""
    dst.mkdir(parents=True)
    os.link(src / "vectors.npy", dst / "vectors.npy")
    shutil.copy(src / "labels.npy", dst / "labels.npy")
    work = src / ".alloop"
    for f in work.rglob("*"):
        rel = f.relative_to(work)
        target = dst / ".alloop" / rel
        if f.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif f.suffix == ".npy":
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)
    name, params = VARIANTS.get(strategy, (strategy, {}))
    toml = (src / "alloop.toml").read_text().replace('name = "margin"', f'name = "{name}"' + "".join(
        f"\nparams.{k} = {json.dumps(v)}" for k, v in params.items()))
    toml += "\n[execution]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in execution.items())
    (dst / "alloop.toml").write_text(toml)


def run(ns: list[int], d: int, strategies: list[str], backends: list[str], local_only: list[str],
        max_n: dict[str, int], skip: set[tuple[str, str, int]] = frozenset()) -> dict:  # type: ignore[assignment]
    from tests.helpers.ray_cluster import ENV, RayCluster

    out: dict = {"machine": machine_info(__file__), "runs": [], "imports": []}
    clusters: dict[str, RayCluster] = {}
    os.environ.update(ENV)
    try:
        for backend in backends:
            if backend.startswith("ray"):
                clusters[backend] = RayCluster(workers=int(backend[3:] or 1), cpus=1).start()
        for n in ns:
            with tempfile.TemporaryDirectory(dir=os.environ.get("ALLOOP_BENCH_TMP")) as tmp:
                base = Path(tmp) / "base"
                base.mkdir()
                make_pool(base, n, d)
                imp = _run_child("import", base)
                out["imports"].append({"n": n, "d": d, "seconds": imp["seconds"], "rows_per_s": n / imp["seconds"],
                                       "peak_rss_mib": imp["peak_rss_mib"], "disk": _disk(base)})
                print(json.dumps(out["imports"][-1]), flush=True)
                for strategy in strategies:
                    if n > max_n.get(strategy, n):
                        continue
                    for backend in backends:
                        if (backend != "local" and strategy in local_only) or (strategy, backend, n) in skip:
                            continue
                        execution = {"backend": "local"} if backend == "local" else {
                            "backend": "ray", "address": clusters[backend].address}
                        folder = Path(tmp) / f"{strategy}-{backend}"
                        _copy_project(base, folder, strategy, execution)
                        rnd = _run_round(folder, clusters.get(backend))
                        row = {"n": n, "d": d, "strategy": strategy, "backend": backend,
                               "round1_s": rnd["round1_s"], "us_per_row": 1e6 * rnd["round1_s"] / n,
                               "connect_s": rnd["connect_s"],
                               "steps": rnd["round1_steps"], "driver_peak_rss_mib": rnd["peak_rss_mib"],
                               "worker_peak_rss_mib": rnd.get("worker_peak_rss_mib")}
                        out["runs"].append(row)
                        print(json.dumps(row), flush=True)
                        shutil.rmtree(folder)
    finally:
        for c in clusters.values():
            c.stop()
    return out


def report(res: dict) -> str:
    m = res["machine"]
    lines = ["# Scale: import and one round against the pool size", "",
             f"Machine: {m['cpu']}, {m['logical_cores']} cores, {m['ram_gib']} GiB; {provenance_note(m)}.", "",
             "| N | d | import (rows/s) | import peak RSS |", "|---|---|---|---|"]
    for i in res["imports"]:
        lines.append(f"| {i['n']:,} | {i['d']} | {i['rows_per_s']:,.0f} | {i['peak_rss_mib']:,.0f} MiB |")
    lines += ["", "Round 1 (train, score, select 1,000, push, collect), timed after the process connected to its "
              "execution backend (connect: the time that took, once per process).", "",
              "| N | strategy | backend | round 1 | per row | vs local | connect | driver peak RSS | "
              "worker peak RSS | steps (s) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    local = {(r["n"], r["strategy"]): r["round1_s"] for r in res["runs"] if r["backend"] == "local"}
    for r in res["runs"]:
        steps = ", ".join(f"{s['action']} {s['seconds']:.1f}" for s in r["steps"])
        base = local.get((r["n"], r["strategy"]))
        ratio = f"{r['round1_s'] / base:.2f}x" if base else ""
        worker = "" if r.get("worker_peak_rss_mib") is None else f"{r['worker_peak_rss_mib']:,.0f} MiB"
        lines.append(f"| {r['n']:,} | {r['strategy']} | {r['backend']} | {r['round1_s']:.1f} s | "
                     f"{r['us_per_row']:.2f} µs | {ratio} | {r['connect_s']:.1f} s | "
                     f"{r['driver_peak_rss_mib']:,.0f} MiB | {worker} | {steps} |")
    if res.get("skipped"):
        lines += ["", "Left out (too long for this 2-core machine's session): " + ", ".join(res["skipped"]) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--strategies", nargs="+", default=["margin", "coreset"])
    ap.add_argument("--backends", nargs="+", default=["local", "ray1", "ray2"])
    ap.add_argument("--local-only", nargs="*", default=[],
                    help="strategies run on the local backend only")
    ap.add_argument("--max-n", nargs="*", default=[], metavar="STRATEGY=N",
                    help="largest N for a strategy, e.g. coreset=1000000")
    ap.add_argument("--skip", nargs="*", default=[], metavar="STRATEGY/BACKEND/N",
                    help="runs left out, e.g. coreset/ray1/10000000")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "OUT"))
    args = ap.parse_args()
    if args.child:
        round_child(Path(args.child[0]), Path(args.child[1]))
        return
    max_n = {k: int(v) for k, v in (x.split("=") for x in args.max_n)}
    skip = {(a, b, int(c)) for a, b, c in (x.split("/") for x in args.skip)}
    res = run(args.n, args.d, args.strategies, args.backends, args.local_only, max_n, skip)
    res["skipped"] = sorted(args.skip)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "scale.md").write_text(report(res))
    print(report(res))


if __name__ == "__main__":
    main()
