"""Compare strategies by running the real loop with the simulated annotator, over many seeds.

Each run is the same :class:`~alloop.loop.controller.Controller` the CLI uses, on a private
in-memory database holding a copy of the project's labeled samples, with the ``oracle``
connector. Runs are spread over processes (joblib); features come from the shared on-disk
cache, computed once up front.

Results: a learning curve per run (labels vs held-out accuracy, one point per trained model)
and its normalized area under the budget curve (AUBC: trapezoid area divided by the label
range, i.e. the mean accuracy over the budget).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from alloop.config import Component, ProjectConfig
from alloop.errors import ConfigError, EmptyPoolError
from alloop.progress import NULL_PROGRESS, Progress
from alloop.userwarnings import SeenWarning, WarningLog
from alloop.workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationSpec:
    strategies: tuple[Component, ...]
    seeds: tuple[int, ...]
    initial_size: int = 20
    batch_size: int = 10
    rounds: int = 10
    """Rounds per run, round 0 (cold start) included."""
    test_fraction: float = 0.3
    learner: Component | None = None
    """Default: the project's learner."""
    cold_start: Component | None = None
    cold_starts: tuple[Component, ...] = ()
    """Round-0 strategies to compare: every run pairs one of them with one of ``strategies``
    and is labelled ``"<cold start>+<strategy>"``. Empty: every run uses ``cold_start`` (else
    the project's cold start) and is labelled by its strategy alone."""
    noise: float = 0.0
    initial_per_class: bool = False
    """Start from one random labeled example per class (the ActiveKD/PCoreSet protocol) instead
    of ``initial_size`` random ones; uses the known labels to pick them (simulation only)."""
    stopping: bool = False
    """Measure every round model on the stop set (:mod:`alloop.loop.stopping`) without stopping,
    to report where each stopping rule would have stopped (:meth:`SimulationResult.stopping_table`)."""


@dataclass
class RunResult:
    strategy: str
    seed: int
    n_labels: list[int]
    accuracy: list[float]
    aubc: float
    seconds: float
    stop: list[dict[str, float]] = field(default_factory=list)
    """Per point of the curve, the model's stop-set measures (``stop_kappa``, ``stop_uncertainty``)
    when the run measured them."""
    warnings: list[SeenWarning] = field(default_factory=list, repr=False)
    """Distinct warnings raised by user code during the run (reported once by :func:`simulate`)."""


@dataclass
class SimulationResult:
    spec: SimulationSpec
    runs: list[RunResult] = field(default_factory=list)

    def by_strategy(self) -> dict[str, list[RunResult]]:
        out: dict[str, list[RunResult]] = {}
        for r in self.runs:
            out.setdefault(r.strategy, []).append(r)
        return out

    def table(self) -> list[dict[str, Any]]:
        """One row per strategy: AUBC mean/std/min/max, final accuracy mean/std, runs."""
        rows = []
        for name, runs in self.by_strategy().items():
            aubc = np.array([r.aubc for r in runs])
            final = np.array([r.accuracy[-1] for r in runs])
            rows.append(
                {
                    "strategy": name,
                    "runs": len(runs),
                    "aubc_mean": float(aubc.mean()),
                    "aubc_std": float(aubc.std(ddof=1)) if len(runs) > 1 else 0.0,
                    "aubc_min": float(aubc.min()),
                    "aubc_max": float(aubc.max()),
                    "final_acc_mean": float(final.mean()),
                    "final_acc_std": float(final.std(ddof=1)) if len(runs) > 1 else 0.0,
                    "final_labels": int(runs[0].n_labels[-1]),
                }
            )
        return sorted(rows, key=lambda r: -r["aubc_mean"])

    def labels_saved(self, reference: str = "random") -> list[dict[str, Any]]:
        """Per strategy, paired by seed with ``reference``: the labels it needed to reach the
        accuracy ``reference`` reached with all its labels (its last point), and so the labels
        saved (``reference``'s final labels minus those), with a 95% t-interval over the seeds
        that reached it. A seed that never reached it counts in ``not_reached``; a negative saving
        means more labels than the reference needed."""
        from scipy import stats

        ref = {r.seed: r for r in self.runs if r.strategy == reference}
        rows = []
        for name, runs in self.by_strategy().items():
            if name == reference or not ref:
                continue
            saved, missed = [], 0
            for run in runs:
                base = ref.get(run.seed)
                if base is None:
                    continue
                target = base.accuracy[-1]
                needed = next((n for n, a in zip(run.n_labels, run.accuracy) if a >= target), None)
                if needed is None:
                    missed += 1
                else:
                    saved.append(base.n_labels[-1] - needed)
            row: dict[str, Any] = {"strategy": name, "reference": reference, "paired_seeds": len(saved) + missed,
                                   "reached": len(saved), "not_reached": missed, "saved_mean": None,
                                   "saved_low": None, "saved_high": None}
            if saved:
                arr = np.asarray(saved, dtype=float)
                row["saved_mean"] = float(arr.mean())
                if arr.size > 1:
                    half = float(stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / np.sqrt(arr.size))
                    row["saved_low"], row["saved_high"] = row["saved_mean"] - half, row["saved_mean"] + half
            rows.append(row)
        return rows

    def stopping_table(self, kappa: float = 0.99, window: int = 3, uncertainty: float = 0.05) -> list[dict[str, Any]]:
        """Where each stopping rule would have stopped each run (runs with stop-set measures):
        mean labels then, mean accuracy then, mean accuracy given up against the run's last
        point, and in how many runs the rule fired at all."""
        from alloop.config import LoopConfig
        from alloop.loop.stopping import stopping_reason

        rules = {f"stabilizing predictions (kappa >= {kappa}, window {window})":
                 LoopConfig(stop_kappa=kappa, stop_window=window),
                 f"overall uncertainty (< {uncertainty})": LoopConfig(stop_uncertainty=uncertainty)}
        rows = []
        for name, runs in self.by_strategy().items():
            runs = [r for r in runs if r.stop]
            for rule, loop in rules.items():
                at: list[tuple[int, float, float]] = []
                for r in runs:
                    for i in range(len(r.stop)):
                        if stopping_reason(loop, r.stop[i::-1]) is not None:
                            at.append((r.n_labels[i], r.accuracy[i], r.accuracy[-1] - r.accuracy[i]))
                            break
                if runs:
                    rows.append({
                        "strategy": name, "rule": rule, "runs": len(runs), "fired": len(at),
                        "labels_mean": float(np.mean([a[0] for a in at])) if at else None,
                        "accuracy_mean": float(np.mean([a[1] for a in at])) if at else None,
                        "given_up_mean": float(np.mean([a[2] for a in at])) if at else None,
                        "final_labels": int(runs[0].n_labels[-1]),
                    })
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table(),
            "labels_saved": self.labels_saved(),
            "stopping": self.stopping_table(),
            "runs": [{k: v for k, v in r.__dict__.items() if k != "warnings"} for r in self.runs],
        }


def aubc(n_labels: Sequence[int], accuracy: Sequence[float]) -> float:
    """Normalized area under the budget curve (mean accuracy over the label range)."""
    x = np.asarray(n_labels, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    if x.size == 0:
        return float("nan")
    if x.size == 1 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def _per_class_keys(samples: list[dict[str, Any]], labels: list[str], seed: int, test: set[str]) -> list[str]:
    from alloop.rng import derive_rng

    rng = derive_rng(seed, "initial-per-class")
    keys = []
    for label in labels:
        options = sorted(d["key"] for d in samples if d["reference_label"] == label and d["key"] not in test)
        if options:
            keys.append(options[int(rng.integers(len(options)))])
    return keys


def _run_config(
    base: ProjectConfig, spec: SimulationSpec, strategy: Component, seed: int, work_dir: Path,
    cold_start: Component | None = None, initial_size: int | None = None,
) -> ProjectConfig:
    loop = base.loop.model_copy(
        update=dict(
            initial_size=initial_size or spec.initial_size,
            batch_size=spec.batch_size,
            max_rounds=spec.rounds,
            budget=None,
            target_accuracy=None,
            completion_fraction=1.0,
            completion_timeout_s=None,
            save_models=False,
            stop_kappa=None,
            stop_uncertainty=None,
            track_stopping=spec.stopping,
        )
    )
    project = base.project.model_copy(update=dict(seed=seed, work_dir=work_dir, database="sqlite://"))
    return base.model_copy(
        update=dict(
            project=project,
            loop=loop,
            strategy=strategy,
            learner=spec.learner or base.learner,
            cold_start=cold_start or spec.cold_start or base.cold_start,
            connector=Component(name="oracle", params={"noise": spec.noise}),
        )
    )


#: bytes per pool sample and score column a run may keep in its scratch folder (float32), with room
#: for a model's embeddings (up to this many columns)
_EMBED_COLUMNS = 2048


def scratch_dir(n_samples: int, n_classes: int, concurrent: int) -> str | None:
    """Where the runs' work folders go: memory-backed ``/dev/shm`` when it has ample room, else
    ``None`` (the system's temporary folder).

    A run's work folder holds the score files of its current round only (a closed round's are
    removed), written and read back at every round: on a disk-backed folder that costs
    milliseconds of file-system work per round. The room asked for: every concurrent run's
    scores with embeddings, twice over.
    """
    shm = Path("/dev/shm")
    try:
        if not (shm.is_dir() and os.access(shm, os.W_OK)):
            return None
        free = shutil.disk_usage(shm).free
    except OSError:
        return None
    need = 2 * max(1, concurrent) * n_samples * (8 + 4 * (n_classes + _EMBED_COLUMNS))
    return str(shm) if need <= free // 2 else None


def run_one(
    base: ProjectConfig,
    spec: SimulationSpec,
    strategy: Component,
    seed: int,
    samples: list[dict[str, Any]],
    labels: list[str],
    cache_dir: Path,
    cold_start: Component | None = None,
    vector_files: Sequence[Any] = (),
    scratch: str | None = None,
) -> RunResult:
    """One simulated project: seed-specific test split, the real loop to the end.

    ``vector_files``: the project's vector store (``VectorFileInfo`` with absolute paths), read in
    place when the samples carry their store rows. ``scratch``: the folder the run's temporary
    work folder goes in (see :func:`scratch_dir`; default: the system's temporary folder).
    """
    import time

    from sqlalchemy import insert
    from sqlmodel import col, select
    from threadpoolctl import threadpool_limits

    from alloop.loop.artifacts import scores_path
    from alloop.loop.controller import Controller
    from alloop.loop.result import TickResult
    from alloop.pool.importer import in_test_split
    from alloop.store.engine import open_store, session_scope
    from alloop.store.models import ModelVersion, Project, Sample, VectorFile, utcnow

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="alloop-sim-", dir=scratch) as tmp, threadpool_limits(1):
        test = {d["key"] for d in samples if in_test_split(seed, d["key"], spec.test_fraction)}
        cold, size = cold_start, None
        if spec.initial_per_class:
            keys = _per_class_keys(samples, labels, seed, test)
            cold, size = Component(name="given", params={"keys": keys}), len(keys)
        cfg = _run_config(base, spec, strategy, seed, Path(tmp), cold, size)
        engine = open_store("sqlite://")
        ws = Workspace(cfg, engine=engine, cache_dir=cache_dir)
        with session_scope(engine) as s:
            project = Project(name=cfg.project.name, task=cfg.project.task, labels=labels, seed=seed, config={})
            s.add(project)
            s.flush()
            now = utcnow()
            s.execute(insert(Sample), [dict(project_id=project.id, split="test" if d["key"] in test else "pool",
                                            created_at=now, **d) for d in samples])
            for f in vector_files:
                s.add(VectorFile(project_id=project.id, path=f.path, first_row=f.first_row, rows=f.rows,  # type: ignore[arg-type]
                                 dim=f.dim))
        ws.reference_labels_override = {d["key"]: d["reference_label"] for d in samples}
        label = run_label(cold_start, strategy)
        seen = WarningLog(report=False)  # handed back to the parent, which reports each once

        def drop_scores(r: TickResult) -> None:  # a closed round's scores are read no more: keep one round's
            if r.action == "closed" and r.round is not None:
                shutil.rmtree(scores_path(Path(tmp), r.round), ignore_errors=True)

        Controller(ws, use_lock=False, warnings=seen, sole_writer=True).run(on_tick=drop_scores)
        with session_scope(engine) as s:
            models = s.exec(select(ModelVersion).order_by(col(ModelVersion.id))).all()
        points = [(m.n_labels, m.metrics["accuracy"], {k: v for k, v in m.metrics.items() if k.startswith("stop_")})
                  for m in models if "accuracy" in m.metrics]
        engine.dispose()
    n, acc = [p[0] for p in points], [p[1] for p in points]
    stop = [p[2] for p in points] if spec.stopping else []
    found = [replace(w, where=f"run {label}, seed {seed}, {w.where}") for w in seen.seen]
    return RunResult(label, seed, n, acc, aubc(n, acc), time.perf_counter() - t0, stop, found)


def run_label(cold_start: Component | None, strategy: Component) -> str:
    """``"margin"``, or ``"ideal+margin"`` when runs compare cold starts."""
    return strategy.name if cold_start is None else f"{cold_start.name}+{strategy.name}"


def simulate(
    workspace: Workspace,
    spec: SimulationSpec,
    *,
    n_jobs: int = -1,
    progress: Progress = NULL_PROGRESS,
) -> SimulationResult:
    """Run every (strategy, seed) pair on copies of ``workspace``'s labeled samples."""
    from joblib import Parallel, delayed, effective_n_jobs
    from sqlmodel import col, select

    from alloop.features.store import VectorFileInfo
    from alloop.protocols import FeatureLearner, SampleRef
    from alloop.store.engine import session_scope
    from alloop.store.models import Sample, VectorFile
    from alloop.store.queries import get_project

    if not spec.strategies or not spec.seeds:
        raise ConfigError("simulate needs at least one strategy and one seed.")
    from alloop import registry

    for comp in spec.strategies:  # fail fast on unknown names or bad params
        registry.create("strategy", comp.name, comp.params)
    for comp in spec.cold_starts:
        if "proba" in registry.create("strategy", comp.name, comp.params).requires:
            raise ConfigError(
                f"cold start {comp.name!r} needs model probabilities, which round 0 does not have. "
                "Use a model-free strategy such as 'random', 'coreset' or 'ideal'."
            )
    if spec.cold_starts and spec.initial_per_class:
        raise ConfigError(
            "Compare cold starts or start from one example per class, not both: drop --cold-start "
            "or --initial-per-class."
        )
    with session_scope(workspace.engine) as s:
        project = get_project(s, workspace.name)
        if project.task == "detection":
            raise ConfigError(
                "`alloop simulate` compares strategies on classification and text projects. For detection, "
                "run the project itself with the simulated annotator (connector 'oracle') once per strategy, "
                "as examples/detection_ofds/run.sh does, or see benchmarks/ofds_rare_class.py."
            )
        rows = s.exec(
            select(Sample).where(
                Sample.project_id == project.id, Sample.status == "ok", col(Sample.reference_label).is_not(None)
            ).order_by(col(Sample.id))
        ).all()
        files = [
            VectorFileInfo(str((workspace.work_dir / f.path).resolve()), f.first_row, f.rows, f.dim)
            for f in s.exec(select(VectorFile).where(VectorFile.project_id == project.id)).all()
        ]
    if len(rows) < spec.initial_size + spec.batch_size:
        raise EmptyPoolError(
            f"Simulation needs at least {spec.initial_size + spec.batch_size} samples with known labels; "
            f"the project has {len(rows)}. Run `alloop import` first, with a pool that has labels "
            "(class sub-folders, a label column, a bundled dataset)."
        )
    refs = [SampleRef(r.key, r.kind, r.content_hash, r.data, workspace.work_dir) for r in rows]
    failures: dict[str, str] = {}
    if not (files and workspace.config.features.name == "vector" and all(r.row is not None for r in rows)):
        files = []  # fill the feature cache once, here, so workers only read it
        _, failures = workspace.feature_cache.get(refs, workspace.encoder, progress)
    learner = spec.learner or workspace.config.learner
    fitted_here = registry.create("learner", learner.name, learner.params)
    if "teacher" in fitted_here.requires:
        from alloop.teachers.base import teacher_proba  # teacher outputs too, once

        _, bad = teacher_proba(workspace.teacher, list(project.labels), refs, workspace.feature_cache, progress)
        failures.update(bad)
    samples = [
        dict(key=r.key, kind=r.kind, content_hash=r.content_hash, data=r.data, reference_label=r.reference_label,
             row=r.row if files else None)
        for r in rows
        if r.key not in failures
    ]
    jobs = [(cold, c, seed) for cold in (spec.cold_starts or (None,)) for c in spec.strategies for seed in spec.seeds]
    # feature learners' runs write only score files; an external learner's run folders can be large: on disk
    scratch = scratch_dir(len(samples), len(project.labels), min(len(jobs), effective_n_jobs(n_jobs))
                          ) if isinstance(fitted_here, FeatureLearner) else None
    result = SimulationResult(spec)
    base = workspace.config
    user_warnings = WarningLog()
    with progress.task(f"Simulating {len(jobs)} runs", total=len(jobs)) as bar:
        for run in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            delayed(run_one)(base, spec, c, seed, samples, list(project.labels), workspace.cache_dir, cold, files,
                             scratch)
            for cold, c, seed in jobs
        ):
            user_warnings.merge(run.warnings)
            result.runs.append(run)
            bar.advance()
    order = {(run_label(cold, c), s): i for i, (cold, c, s) in enumerate(jobs)}
    result.runs.sort(key=lambda r: order[(r.strategy, r.seed)])
    return result
