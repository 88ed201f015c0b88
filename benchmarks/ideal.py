"""IDEAL selection: speed and influence against a straightforward reference, and at N = 1e5.

Part A, N = 3,000 (``--n``), budget 100, 10 Monte-Carlo runs, k = 10 neighbours:

* **ours**: :func:`alloop.strategies.ideal.ideal_select` (kNN graph, live-edge worlds drawn
  once, lazy greedy CELF over them, batched BFS); median wall time of ``--repeats`` calls, with
  the graph included, and of the diffusion + greedy alone (``sample_worlds`` + ``celf_greedy``
  on a given graph).
* **reference** (the baseline, :func:`ref_greedy`): the algorithm as the paper's code runs it,
  written straightforwardly: a plain greedy without lazy evaluation; at each of the ``budget``
  steps, every remaining candidate v is scored by estimating the influence of S + {v} from
  scratch with ``runs`` independent cascades, one at a time, each a pure-Python BFS over a
  Python adjacency list with one fresh uniform draw (``random.Random``) per edge attempt; the
  argmax is added (ties: lowest position). It is given the **same kNN graph**
  (:func:`~alloop.strategies._influence_graph.knn_graph`), so only the diffusion and the
  greedy differ, and its time excludes the graph. Made as fast as it honestly can be while
  staying straightforward: adjacency lists built once, bound-method lookups hoisted, a
  random number drawn only for an edge into a not-yet-active node (the same law: each
  edge is tried at most once). It de-duplicates exactly (a visited set), so both methods
  estimate the same quantity; the paper's code counts a node twice when two parents reach it
  in the same wave, a bug not replicated here.

  Quality: the final selections of both (and of ours under ``--seeds`` world seeds, and of
  random sets for scale) are scored on the **same** ``--eval-worlds`` fresh live-edge
  worlds (their own seed), so neither method's own Monte-Carlo noise biases the comparison;
  the difference is paired (same worlds) with its standard error. A sanity check estimates
  the influence of one fixed set by the reference's cascades and by the evaluation worlds:
  the two must agree within Monte-Carlo error.

Part B, N = 1e5 (``--big``): ``ideal_select`` with ``neighbors="auto"`` (faiss IVF at this
size) and ``"exact"``, each in a fresh child process: wall time split into graph and greedy
(from ``ideal_select``'s own log record), and peak memory = the child's peak RSS
(``VmHWM`` of /proc/self/status) after the call minus its RSS before it (after imports and
after loading the embeddings). ``ru_maxrss`` is recorded too but is not the headline: Linux
carries it across the fork + exec of a spawned child, so the child's starts at the parent's
peak and only growth above that shows (``VmHWM`` is reset by exec). A second child per neighbour search measures the tracemalloc
peak per phase (numpy allocations; faiss's C++ allocations are invisible to tracemalloc).
The IVF picks are scored against the exact picks on ``--big-eval-worlds`` worlds of the exact
graph. When faiss's bundled OpenBLAS runs a different kernel architecture than numpy's
(e.g. a generic "Prescott" fallback on a CPU it does not recognise), the IVF case is rerun
with ``OPENBLAS_CORETYPE`` set to numpy's architecture to show the difference.

Data (seeded): a stand-in for sentence embeddings, ``--dim`` = 384 (MiniLM size). ``--clusters``
= 50 topics with Dirichlet(2) sizes; topic centres N(0, I/d) (norm ~ 1); inside a topic, a
random ``--rank`` = 16 dimensional subspace of variation (variance 0.8 in all) plus isotropic
noise (variance 0.3 in all), so same-topic cosines are about 0.5, cross-topic about 0, and the
neighbourhoods have a low intrinsic dimension, as real text embeddings do. float32.

Usage::

    python benchmarks/ideal.py            # full: N = 3000 (reference ~10-15 min) and N = 1e5
    python benchmarks/ideal.py --no-big   # part A only
    python benchmarks/ideal.py --quick    # smoke run (N = 600, b = 20, big N = 20000), prints only

Results go to ``benchmarks/results/ideal.json`` and ``.md`` with the machine they ran on.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import logging
import multiprocessing as mp
import os
import random
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine_info as _machine_info
from _machine import now as _now
from _machine import provenance_note
from threadpoolctl import threadpool_info

from alloop.strategies._influence import activate, celf_greedy, sample_worlds
from alloop.strategies._influence_graph import _resolve, knn_graph
from alloop.strategies.ideal import ideal_select

RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- machine, data


def machine_info() -> dict:
    """The common record (``_machine.machine_info``) plus the faiss version."""
    try:
        import faiss
        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = None
    return {**_machine_info(__file__), "faiss": faiss_version}


def make_embeddings(n: int, d: int = 384, clusters: int = 50, rank: int = 16,
                    seed: int = 0) -> np.ndarray:
    """Sentence-embedding stand-in: topics = low-rank Gaussian clusters (see module docstring)."""
    rng = np.random.default_rng(seed)
    sizes = rng.dirichlet(np.full(clusters, 2.0))
    topic = rng.choice(clusters, n, p=sizes)
    centres = (rng.standard_normal((clusters, d)) / np.sqrt(d)).astype(np.float32)
    bases = np.linalg.qr(rng.standard_normal((clusters, d, rank)))[0].astype(np.float32)
    X = np.empty((n, d), np.float32)
    for s in range(0, n, 8192):  # bounded float32 scratch
        t = topic[s : s + 8192]
        z = rng.standard_normal((t.size, rank), dtype=np.float32) * np.float32(np.sqrt(0.8 / rank))
        X[s : s + 8192] = centres[t] + np.einsum("mdr,mr->md", bases[t], z)
        X[s : s + 8192] += rng.standard_normal((t.size, d), dtype=np.float32) * np.float32(
            np.sqrt(0.3 / d))
    return X


# ----------------------------------------------------------------------------- the reference


def ref_adjacency(G) -> list[list[tuple[int, float]]]:
    """REFERENCE: Python adjacency lists ``[(successor, probability), ...]`` of the kNN graph."""
    ip, ix, p = G.indptr, G.indices.tolist(), G.data.tolist()
    return [list(zip(ix[ip[i] : ip[i + 1]], p[ip[i] : ip[i + 1]])) for i in range(G.shape[0])]


def ref_cascade(adj, seeds, rand) -> int:
    """REFERENCE: one independent cascade from ``seeds``; number of active nodes (each once).

    Every newly active node v tries each successor w once, with probability ``p(v, w)``; a
    successor already active needs no draw (its edge can change nothing).
    """
    active = set(seeds)
    front = list(active)
    add = active.add
    while front:
        nxt = []
        push = nxt.append
        for v in front:
            for w, p in adj[v]:
                if w not in active and rand() < p:
                    add(w)
                    push(w)
        front = nxt
    return len(active)


def ref_influence(adj, seeds, runs: int, rand) -> float:
    """REFERENCE: Monte-Carlo influence, ``runs`` cascades one after the other."""
    total = 0
    for _ in range(runs):
        total += ref_cascade(adj, seeds, rand)
    return total / runs


def ref_greedy(adj, budget: int, runs: int, seed: int, log_every: int = 0):
    """REFERENCE: plain greedy (no lazy evaluation), fresh cascades for every candidate.

    Returns (picks, influence estimate of the seed set after each step, seconds per step).
    """
    rand = random.Random(seed).random
    n = len(adj)
    picks: list[int] = []
    est, step_s = [], []
    t_start = time.perf_counter()
    for t in range(budget):
        t0 = time.perf_counter()
        chosen = set(picks)
        best, best_v = -1.0, -1
        for v in range(n):
            if v in chosen:
                continue
            s = ref_influence(adj, [*picks, v], runs, rand)
            if s > best:
                best, best_v = s, v
        picks.append(best_v)
        est.append(best)
        step_s.append(time.perf_counter() - t0)
        if log_every and ((t + 1) % log_every == 0 or t + 1 == budget):
            el = time.perf_counter() - t_start
            print(f"  reference step {t + 1}/{budget}: influence {best:.1f}, "
                  f"{step_s[-1]:.2f} s/step, {el:.0f} s so far", flush=True)
    return np.array(picks, np.int64), np.array(est), np.array(step_s)


def ref_worlds_greedy(W, budget: int):
    """DIAGNOSTIC (not the paper's algorithm): the same plain greedy, but every candidate is
    scored on ``W``'s fixed live-edge worlds (common random numbers, as ours does), by a
    pure-Python BFS per world. Its picks must equal ``celf_greedy``'s on ``W`` exactly.
    """
    n = W.n
    adjw = []
    for r in range(W.runs):
        ip, ix = W.indptr[r * n : (r + 1) * n + 1], (W.indices - r * n).tolist()
        adjw.append([ix[ip[v] : ip[v + 1]] for v in range(n)])

    def reach(adj, seeds):
        seen = set(seeds)
        stack = list(seen)
        while stack:
            for w in adj[stack.pop()]:
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        return len(seen)

    picks: list[int] = []
    for _ in range(budget):
        chosen = set(picks)
        best, best_v = -1, -1
        for v in range(n):
            if v in chosen:
                continue
            s = sum(reach(adj, [*picks, v]) for adj in adjw)
            if s > best:
                best, best_v = s, v
        picks.append(best_v)
    return np.array(picks, np.int64)


# ----------------------------------------------------------------------------- evaluation


def world_counts(W, seeds) -> np.ndarray:
    """Number of nodes reached from ``seeds`` in each world (shape (runs,))."""
    active = np.zeros(W.n * W.runs, bool)
    activate(W, np.asarray(seeds, np.int64), active)
    return active.reshape(W.runs, W.n).sum(axis=1)


def _stats(c: np.ndarray) -> dict:
    return {"mean": float(c.mean()), "se": float(c.std(ddof=1) / np.sqrt(c.size))}


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Relative difference (a - b) / b of the means, with its paired standard error."""
    d = a.astype(np.float64) - b
    return {"diff": float(d.mean()), "diff_se": float(d.std(ddof=1) / np.sqrt(d.size)),
            "rel": float(d.mean() / b.mean()), "rel_se": float(d.std(ddof=1) / np.sqrt(d.size)
                                                              / b.mean())}


def _median_time(f, repeats: int) -> tuple[float, list[float]]:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), ts


# ----------------------------------------------------------------------------- part A


def part_a(args) -> dict:
    n, b, runs, k = args.n, args.budget, args.runs, args.k
    X = make_embeddings(n, args.dim, args.clusters, args.rank, seed=args.seed)
    rec = {"N": n, "d": args.dim, "budget": b, "runs": runs, "k": k, "date": _now(),
           "loadavg": [os.getloadavg()[0]]}
    t = time.perf_counter()
    G = knn_graph(X, k, neighbors="exact")
    rec["graph_s"], rec["edges"] = time.perf_counter() - t, int(G.nnz)

    # ours, timed: the whole ideal_select (graph included), then diffusion + greedy alone
    ideal_select(X, b, rng=np.random.default_rng(0), n_neighbors=k, runs=runs,
                 neighbors="exact")  # warm-up
    rec["ours_s"], rec["ours_s_all"] = _median_time(
        lambda: ideal_select(X, b, rng=np.random.default_rng(0), n_neighbors=k, runs=runs,
                             neighbors="exact"), args.repeats)
    rec["ours_greedy_s"], rec["ours_greedy_s_all"] = _median_time(
        lambda: celf_greedy(sample_worlds(G, runs, np.random.default_rng(0)), b, np.arange(n)),
        args.repeats)
    rec["loadavg"].append(os.getloadavg()[0])
    print(f"ours: ideal_select {rec['ours_s']:.3f} s (median of {args.repeats}), "
          f"diffusion + greedy alone {rec['ours_greedy_s']:.3f} s", flush=True)

    # the reference, once, fully
    adj = ref_adjacency(G)
    t = time.perf_counter()
    ref_picks, ref_est, ref_steps = ref_greedy(adj, b, runs, seed=args.seed,
                                               log_every=max(1, b // 10))
    rec["ref_s"] = time.perf_counter() - t
    rec["ref_step_s"] = {"first": float(ref_steps[0]), "last": float(ref_steps[-1]),
                         "mean": float(ref_steps.mean())}
    rec["ref_cascades"] = int(runs * sum(n - t for t in range(b)))
    rec["loadavg"].append(os.getloadavg()[0])
    rec["speedup"] = rec["ref_s"] / rec["ours_s"]
    rec["speedup_greedy"] = rec["ref_s"] / rec["ours_greedy_s"]
    print(f"reference: {rec['ref_s']:.1f} s ({rec['ref_cascades']:,} cascades); "
          f"ratio {rec['speedup']:.0f}x (graph included in ours), "
          f"{rec['speedup_greedy']:.0f}x (greedy alone)", flush=True)

    # diagnostic: the plain greedy in Python on ours' own worlds must make ours' picks
    if not args.no_crn:
        W0 = sample_worlds(G, runs, np.random.default_rng(0))
        t = time.perf_counter()
        crn_picks = ref_worlds_greedy(W0, b)
        rec["ref_worlds_s"] = time.perf_counter() - t
        ours_p = celf_greedy(W0, b, np.arange(n))[0]
        rec["ref_worlds_identical"] = bool(np.array_equal(crn_picks, ours_p))
        rec["speedup_ref_worlds"] = rec["ref_worlds_s"] / rec["ours_greedy_s"]
        rec["loadavg"].append(os.getloadavg()[0])
        print(f"plain greedy in Python on ours' worlds: {rec['ref_worlds_s']:.1f} s, picks "
              f"identical to ours: {rec['ref_worlds_identical']}", flush=True)

    # quality on common fresh worlds
    We = sample_worlds(G, args.eval_worlds, np.random.default_rng(10_000 + args.seed))
    ours = {s: ideal_select(X, b, rng=np.random.default_rng(s), n_neighbors=k, runs=runs,
                            neighbors="exact") for s in range(args.seeds)}
    c_ours = {s: world_counts(We, p) for s, (p, _) in ours.items()}
    c_ref = world_counts(We, ref_picks)
    rrng = np.random.default_rng(20_000 + args.seed)
    more = {r: ideal_select(X, b, rng=np.random.default_rng(0), n_neighbors=k, runs=r,
                            neighbors="exact")[0] for r in args.more_runs}
    c_rand = [world_counts(We, rrng.choice(n, b, replace=False)) for _ in range(args.seeds)]
    p0, g0 = ours[0]
    rec["quality"] = {
        "eval_worlds": args.eval_worlds,
        "ours_seed0": _stats(c_ours[0]),
        "ours_seed0_own_estimate": float(g0.sum()),
        "reference": _stats(c_ref),
        "reference_own_estimate": float(ref_est[-1]),
        "ours_seed0_vs_reference": _paired(c_ours[0], c_ref),
        "ours_seeds": [float(c.mean()) for c in c_ours.values()],
        "ours_seeds_vs_reference_rel": [float(c.mean() / c_ref.mean() - 1) for c in c_ours.values()],
        "random_sets": [float(c.mean()) for c in c_rand],
        "common_picks_seed0": int(np.intersect1d(p0, ref_picks).size),
        "ours_more_runs": {str(r): _stats(world_counts(We, p)) for r, p in more.items()},
    }
    q = rec["quality"]
    rel = np.array(q["ours_seeds_vs_reference_rel"])
    q["ours_seeds_rel_mean"], q["ours_seeds_rel_min"], q["ours_seeds_rel_max"] = (
        float(rel.mean()), float(rel.min()), float(rel.max()))
    # sanity: the reference's cascades and the evaluation worlds estimate the same quantity
    t = time.perf_counter()
    rand = random.Random(30_000 + args.seed).random
    chk = np.array([ref_cascade(adj, p0.tolist(), rand) for _ in range(args.eval_worlds)])
    q["sanity_ours_seed0_by_ref_cascades"] = _stats(chk)
    q["sanity_s"] = time.perf_counter() - t
    print(f"influence on {args.eval_worlds} fresh worlds: ours {q['ours_seed0']['mean']:.2f} "
          f"± {q['ours_seed0']['se']:.2f}, reference {q['reference']['mean']:.2f} "
          f"± {q['reference']['se']:.2f}; ours - ref = "
          f"{100 * q['ours_seed0_vs_reference']['rel']:+.2f}% "
          f"± {100 * q['ours_seed0_vs_reference']['rel_se']:.2f}% (paired SE); "
          f"{args.seeds} seeds of ours: {100 * rel.min():+.2f}% .. {100 * rel.max():+.2f}% "
          f"(mean {100 * rel.mean():+.2f}%); random sets {np.mean(q['random_sets']):.1f}; "
          f"sanity: same set by reference cascades {chk.mean():.2f} vs worlds "
          f"{q['ours_seed0']['mean']:.2f}", flush=True)
    return rec


# ----------------------------------------------------------------------------- part B (children)


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key)).split()[1])


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.args = None

    def emit(self, record):
        if record.getMessage().startswith("ideal:"):
            self.args = record.args


def child_time(path: str, budget: int, runs: int, k: int, neighbors: str, out: str) -> dict:
    """In a fresh process: one ideal_select call; graph / greedy seconds and peak RSS."""
    try:
        import faiss  # noqa: F401  (library load is not part of the selection's memory)
    except ImportError:
        pass
    X = np.load(path)
    ilog = logging.getLogger("alloop.strategies.ideal")
    cap = _Capture()
    ilog.addHandler(cap)
    ilog.setLevel(logging.INFO)
    rss0, hwm0 = _status_kb("VmRSS"), _status_kb("VmHWM")
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    picks, gains = ideal_select(X, budget, rng=np.random.default_rng(0), n_neighbors=k,
                                runs=runs, neighbors=neighbors)
    total = time.perf_counter() - t
    hwm1 = _status_kb("VmHWM")
    maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(out, picks)
    _, _, graph_s, edges, _, greedy_s = cap.args
    blas = {lib.get("filepath", "").split("/")[-1]: lib.get("architecture")
            for lib in threadpool_info() if lib.get("internal_api") == "openblas"}
    return {
        "total_s": total, "graph_s": float(graph_s), "greedy_s": float(greedy_s),
        "edges": int(edges), "influence_own_estimate": float(gains.sum()),
        "X_mib": X.nbytes / 2**20, "rss_before_mib": rss0 / 1024, "hwm_before_mib": hwm0 / 1024,
        "hwm_after_mib": hwm1 / 1024, "peak_extra_mib": (hwm1 - rss0) / 1024,
        "ru_maxrss_before_mib": maxrss0 / 1024, "ru_maxrss_after_mib": maxrss1 / 1024,
        "ru_maxrss_extra_mib": (maxrss1 - maxrss0) / 1024, "openblas": blas,
        "method": _resolve(neighbors, X.shape[0]),
    }


def child_tracemalloc(path: str, budget: int, runs: int, k: int, neighbors: str,
                      save_graph: str | None = None) -> dict:
    """In a fresh process: tracemalloc peak of the graph phase and of worlds + greedy."""
    import tracemalloc
    try:
        import faiss  # noqa: F401
    except ImportError:
        pass
    X = np.load(path)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    G = knn_graph(X, k, neighbors=neighbors)
    graph_peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.reset_peak()
    base2 = tracemalloc.get_traced_memory()[0]
    W = sample_worlds(G, runs, np.random.default_rng(0))
    celf_greedy(W, budget, np.arange(X.shape[0]))
    greedy_peak = tracemalloc.get_traced_memory()[1] - base2
    tracemalloc.stop()
    if save_graph:
        import scipy.sparse as sp
        sp.save_npz(save_graph, G)
    g_bytes = G.data.nbytes + G.indices.nbytes + G.indptr.nbytes
    w_bytes = W.indptr.nbytes + W.indices.nbytes
    return {"graph_peak_mib": graph_peak / 2**20, "greedy_peak_mib": greedy_peak / 2**20,
            "graph_held_mib": g_bytes / 2**20, "worlds_mib": w_bytes / 2**20}


def _in_child(fn, *a, env: dict | None = None):
    """Run ``fn(*a)`` in a fresh spawned process (optionally with extra environment)."""
    old = {key: os.environ.get(key) for key in (env or {})}
    os.environ.update(env or {})
    try:
        with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
            return ex.submit(fn, *a).result()
    finally:
        for key, v in old.items():
            if v is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = v


def _blas_arch(info: dict, owner: str):
    return next((b.get("architecture") for b in info["blas"]
                 if b["owner"] == owner and b.get("internal_api") == "openblas"), None)


def part_b(args, info: dict) -> dict:
    n, b, runs, k = args.big_n, args.budget, args.runs, args.k
    rec = {"N": n, "d": args.dim, "budget": b, "runs": runs, "k": k, "date": _now(), "cases": []}
    X = make_embeddings(n, args.dim, args.clusters, args.rank, seed=args.seed + 1)
    cases = [(nb, {}) for nb in args.big_neighbors]
    np_arch, fa_arch = _blas_arch(info, "numpy"), _blas_arch(info, "faiss")
    if (not args.quick and fa_arch and np_arch and fa_arch != np_arch
            and not os.environ.get("OPENBLAS_CORETYPE")):
        cases.append(("auto", {"OPENBLAS_CORETYPE": np_arch}))
    with tempfile.TemporaryDirectory() as tmp:
        path, gpath = os.path.join(tmp, "X.npy"), os.path.join(tmp, "G_exact.npz")
        np.save(path, X)
        del X
        picks = {}
        for neighbors, env in cases:
            tag = neighbors + ("" if not env else f" OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}")
            out = os.path.join(tmp, f"picks{len(picks)}.npy")
            la = os.getloadavg()[0]
            r = _in_child(child_time, path, b, runs, k, neighbors, out, env=env)
            r.update({"neighbors": neighbors, "env": env, "date": _now(),
                      "loadavg": [la, os.getloadavg()[0]]})
            if not env:
                r["tracemalloc"] = _in_child(child_tracemalloc, path, b, runs, k, neighbors,
                                             gpath if neighbors == "exact" else None)
            picks[tag] = np.load(out)
            rec["cases"].append(r)
            print(f"N={n:,} neighbors={tag}: ideal_select {r['total_s']:.1f} s (graph "
                  f"{r['graph_s']:.1f} s, greedy {r['greedy_s']:.2f} s); peak RSS "
                  f"+{r['peak_extra_mib']:.0f} MiB over {r['rss_before_mib']:.0f} MiB "
                  f"(X {r['X_mib']:.0f} MiB)"
                  + (f"; tracemalloc peak graph {r['tracemalloc']['graph_peak_mib']:.0f} MiB, "
                     f"greedy {r['tracemalloc']['greedy_peak_mib']:.0f} MiB"
                     if "tracemalloc" in r else ""), flush=True)
        # quality of the approximate (IVF) graph's picks, on worlds of the exact graph
        if "exact" not in picks:
            return rec
        import scipy.sparse as sp
        G = sp.csr_matrix(sp.load_npz(gpath))
    We = sample_worlds(G, args.big_eval_worlds, np.random.default_rng(40_000 + args.seed))
    c = {tag: world_counts(We, p) for tag, p in picks.items()}
    ex = c["exact"]
    rec["quality_on_exact_graph"] = {
        "eval_worlds": args.big_eval_worlds,
        **{tag: _stats(v) for tag, v in c.items()},
        **{f"{tag} vs exact": _paired(v, ex) for tag, v in c.items() if tag != "exact"},
    }
    for tag, v in c.items():
        if tag != "exact":
            pr = _paired(v, ex)
            print(f"N={n:,}: picks on the {tag} graph reach {v.mean():.1f} vs exact graph's "
                  f"{ex.mean():.1f} on {args.big_eval_worlds} worlds of the exact graph "
                  f"({100 * pr['rel']:+.2f}% ± {100 * pr['rel_se']:.2f}%)", flush=True)
    return rec


# ----------------------------------------------------------------------------- report


def to_markdown(info: dict, a: dict | None, bb: dict | None, command: str) -> str:
    blas = ", ".join(f"{b['owner']}: {b.get('internal_api')} {b.get('version')} "
                     f"({b.get('architecture')}, {b.get('num_threads')} threads)"
                     for b in info["blas"] if b.get("user_api") == "blas")
    L = [
        "# IDEAL selection: speed and influence", "",
        f"- machine: {info['cpu']}, {info['logical_cores']} logical cores, {info['ram_gib']} GiB RAM",
        f"- software: Python {info['python']}, numpy {info['numpy']}, faiss {info['faiss']}; "
        f"BLAS {blas}",
        f"- date: {info['date']} ({provenance_note(info)}); load average at start "
        f"{info['loadavg_start'][0]:.2f}; command: `{command}`",
        f"- data: sentence-embedding stand-in, d = {(a or bb)['d']}, 50 topics of Dirichlet(2) "
        "sizes, each a 16-dimensional Gaussian subspace plus isotropic noise (see the script); "
        "kNN graph k = 10 cosine neighbours of the mean-centred rows.",
        "- reference = the paper's algorithm written straightforwardly: plain greedy, every "
        "candidate scored by `runs` fresh cascades from S + {v}, each a pure-Python BFS (one "
        "uniform draw per edge attempt), exact de-duplication (the paper's code double-counts "
        "a node reached by two parents in one wave; not replicated). Same kNN graph as ours; "
        "its time excludes the graph.",
        "",
    ]
    if a:
        q = a["quality"]
        L += [
            f"## N = {a['N']:,}, budget {a['budget']}, {a['runs']} runs", "",
            "| method | time (s) | ratio ref / ours | influence on "
            f"{q['eval_worlds']} fresh worlds | own estimate |",
            "|---|---|---|---|---|",
            f"| reference (plain greedy, per-cascade Python loops; {a['ref_cascades']:,} "
            f"cascades) | {a['ref_s']:.1f} | 1 | {q['reference']['mean']:.2f} ± "
            f"{q['reference']['se']:.2f} | {q['reference_own_estimate']:.1f} |",
            f"| ours, `ideal_select` (graph included; median of {len(a['ours_s_all'])}) | "
            f"{a['ours_s']:.3f} | **{a['speedup']:,.0f}x** | {q['ours_seed0']['mean']:.2f} ± "
            f"{q['ours_seed0']['se']:.2f} | {q['ours_seed0_own_estimate']:.1f} |",
            f"| ours, worlds + CELF greedy alone (median of {len(a['ours_greedy_s_all'])}) | "
            f"{a['ours_greedy_s']:.3f} | **{a['speedup_greedy']:,.0f}x** | (same picks) | |",
        ]
        if "ref_worlds_s" in a:
            L.append(
                f"| diagnostic: the same plain greedy in Python, every candidate scored on ours' "
                f"10 fixed worlds (common random numbers) | {a['ref_worlds_s']:.1f} | "
                f"{a['speedup_ref_worlds']:,.0f}x (vs greedy alone) | picks identical to ours: "
                f"**{a['ref_worlds_identical']}** | |")
        for r, st in q.get("ours_more_runs", {}).items():
            L.append(f"| ours with runs = {r} (world seed 0) | | | {st['mean']:.2f} ± "
                     f"{st['se']:.2f} | |")
        L += [
            f"| random sets ({len(q['random_sets'])} draws, mean) | | | "
            f"{np.mean(q['random_sets']):.2f} | |",
            "",
            f"- influence, ours (world seed 0) - reference, on the same {q['eval_worlds']} fresh "
            f"worlds: **{100 * q['ours_seed0_vs_reference']['rel']:+.2f}%** "
            f"(± {100 * q['ours_seed0_vs_reference']['rel_se']:.2f}% paired SE); over "
            f"{len(q['ours_seeds'])} world seeds of ours: {100 * q['ours_seeds_rel_min']:+.2f}% "
            f"to {100 * q['ours_seeds_rel_max']:+.2f}% (mean "
            f"{100 * q['ours_seeds_rel_mean']:+.2f}%). {q['common_picks_seed0']} of "
            f"{a['budget']} picks in common.",
            "- why they differ: the reference scores each candidate on its own fresh 10 "
            "cascades, so the standard error of an estimate of sigma(S + v) (that of the "
            "whole reach of S) soon exceeds the true marginal gains, and later picks are "
            "mostly argmaxes of noise; ours compares all candidates on the same worlds, so "
            "differences between candidates are exact within them (the diagnostic row: a "
            "plain greedy on those worlds makes the very same picks).",
            "- 'own estimate' = each method's influence estimate over its own 10 runs "
            "(ours: sum of the marginal gains; the reference: its last argmax), both "
            f"optimistic: the reference picks the luckiest of ~{a['N']:,} noisy estimates per "
            "step; "
            "ours fits its 10 worlds (sample-average approximation), more so with few runs, "
            "which the runs = 30 / 100 / 300 rows show on fresh worlds.",
            f"- sanity: the same set (ours, seed 0) by {q['eval_worlds']} reference cascades: "
            f"{q['sanity_ours_seed0_by_ref_cascades']['mean']:.2f} ± "
            f"{q['sanity_ours_seed0_by_ref_cascades']['se']:.2f} vs "
            f"{q['ours_seed0']['mean']:.2f} on the evaluation worlds.",
            f"- reference per step: {a['ref_step_s']['first']:.2f} s (first) to "
            f"{a['ref_step_s']['last']:.2f} s (last; the cascades grow with S). kNN graph "
            f"(exact, shared) {a['graph_s']:.3f} s. Load average before / after ours / after "
            f"the reference{' / after the diagnostic' if 'ref_worlds_s' in a else ''}: "
            f"{'/'.join(f'{x:.1f}' for x in a['loadavg'])}.",
            "",
        ]
    if bb:
        L += [
            f"## N = {bb['N']:,}, budget {bb['budget']}, {bb['runs']} runs: time and memory", "",
            "Each case is one `ideal_select` call in a fresh process. Peak extra RSS = the "
            "process's peak resident memory (VmHWM) after the call minus its resident memory "
            "just before (after imports and loading the embeddings). tracemalloc peaks "
            "count numpy allocations per phase (not faiss's C++ ones). (`ru_maxrss`, in the "
            "JSON, is carried across a spawned child's fork + exec: it starts at the parent's "
            "peak.) Times move with the machine's load: see the load average before / after.",
            "",
            "| neighbors | total (s) | graph (s) | worlds + greedy (s) | peak extra RSS (MiB) | "
            "RSS before (MiB) | tracemalloc graph / greedy (MiB) | load avg | run at (UTC) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in bb["cases"]:
            tag = r["neighbors"] + (f" ({r['method']})" if r["neighbors"] == "auto" else "")
            if r["env"]:
                tag += f", `OPENBLAS_CORETYPE={r['env']['OPENBLAS_CORETYPE']}`"
            tm = r.get("tracemalloc")
            L.append(
                f"| {tag} | {r['total_s']:.1f} | {r['graph_s']:.1f} | {r['greedy_s']:.2f} | "
                f"{r['peak_extra_mib']:.0f} | {r['rss_before_mib']:.0f} | "
                + (f"{tm['graph_peak_mib']:.0f} / {tm['greedy_peak_mib']:.0f}" if tm else "-")
                + f" | {'/'.join(f'{x:.1f}' for x in r['loadavg'])} | "
                f"{r['date'][:16].replace('T', ' ')} |")
        q = bb["quality_on_exact_graph"]
        X_mib = bb["cases"][0]["X_mib"]
        L += ["", f"- embeddings: {X_mib:.0f} MiB float32 (held before the call, not counted)."]
        for key, v in q.items():
            if key.endswith(" vs exact"):
                tag = key[: -len(" vs exact")]
                L.append(f"- picks on the `{tag}` graph vs on the exact graph, influence on "
                         f"{q['eval_worlds']} worlds of the exact graph: {q[tag]['mean']:.1f} vs "
                         f"{q['exact']['mean']:.1f} ({100 * v['rel']:+.2f}% ± "
                         f"{100 * v['rel_se']:.2f}%).")
        fa = [b for b in info["blas"] if b["owner"] == "faiss" and b.get("user_api") == "blas"]
        if any(r["env"] for r in bb["cases"]):
            L.append(f"- faiss's bundled OpenBLAS ({fa[0].get('version') if fa else '?'}) "
                     f"picks the `{fa[0].get('architecture') if fa else '?'}` kernels on this "
                     "CPU while numpy's picks its native ones; the last row forces the same "
                     "architecture through `OPENBLAS_CORETYPE` (set before faiss loads).")
        L.append("")
    return "\n".join(L)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="pool size of the comparison")
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--runs", type=int, default=10, help="Monte-Carlo runs (both methods)")
    ap.add_argument("--k", type=int, default=10, help="kNN neighbours")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clusters", type=int, default=50)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5, help="timed calls of ours (median)")
    ap.add_argument("--seeds", type=int, default=10, help="world seeds of ours scored")
    ap.add_argument("--eval-worlds", type=int, default=1000)
    ap.add_argument("--more-runs", type=int, nargs="*", default=[30, 100, 300],
                    help="also score ours with these numbers of runs (quality only)")
    ap.add_argument("--no-crn", action="store_true",
                    help="skip the diagnostic plain greedy over ours' own worlds")
    ap.add_argument("--big-n", type=int, default=100_000)
    ap.add_argument("--big-eval-worlds", type=int, default=100)
    ap.add_argument("--big-neighbors", nargs="+", default=["auto", "exact"],
                    choices=["auto", "exact", "faiss-exact", "faiss-ivf"])
    ap.add_argument("--no-big", action="store_true", help="skip part B (N = --big-n)")
    ap.add_argument("--no-ref", action="store_true", help="skip part A (the reference)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (N = 600, b = 20, big N = 20000); prints only")
    ap.add_argument("--out", type=Path, default=None,
                    help="results stem (default benchmarks/results/ideal; --quick writes nothing)")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="only rewrite the .md (next to it) from an existing results .json")
    args = ap.parse_args(argv)
    if args.from_json:
        d = json.loads(args.from_json.read_text())
        md = (to_markdown(d["machine"], d["comparison"], d["big"], d["command"])
              + f"\nWall time of the whole run: {d['machine']['wall_s']:.0f} s.\n")
        args.from_json.with_suffix(".md").write_text(md)
        print(md)
        return
    if args.quick:
        args.n, args.budget, args.repeats, args.seeds = 600, 20, 3, 3
        args.eval_worlds, args.big_n, args.big_eval_worlds = 200, 20_000, 20
        args.big_neighbors = ["faiss-ivf", "exact"]
    out = args.out or (None if args.quick else RESULTS / "ideal")
    command = " ".join(shlex.quote(a) for a in [
        "python", os.path.relpath(sys.argv[0], Path(__file__).resolve().parent.parent),
        *sys.argv[1:]])
    info = machine_info()
    print(f"{info['cpu']} | {info['logical_cores']} cores | {info['ram_gib']} GiB | "
          f"load {info['loadavg_start'][0]:.2f} | BLAS "
          + ", ".join(f"{b['owner']} {b.get('architecture')}" for b in info["blas"]
                     if b.get("user_api") == "blas"), flush=True)
    t0 = time.perf_counter()
    a = None if args.no_ref else part_a(args)
    bb = None if args.no_big else part_b(args, info)
    info["wall_s"] = time.perf_counter() - t0
    info["loadavg_end"] = os.getloadavg()
    md = to_markdown(info, a, bb, command) + f"\nWall time of the whole run: {info['wall_s']:.0f} s.\n"
    print("\n" + md)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(
            {"machine": info, "command": command, "comparison": a, "big": bb}, indent=2) + "\n")
        out.with_suffix(".md").write_text(md)
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
