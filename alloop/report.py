"""Per-round status rows and learning-curve figures (matplotlib, written as PNG)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import col, func, select

from alloop.loop.ingest import DELETED
from alloop.metrics import headline
from alloop.store.engine import session_scope
from alloop.store.models import Annotation, ModelVersion, Sample, Selection, Task
from alloop.store.queries import get_project, model_versions, rounds

if TYPE_CHECKING:
    from alloop.simulate import SimulationResult


_Out = TypeVar("_Out", Path, IO[bytes])


def _counts(s: Any, column: Any, where: Any, group: Any) -> dict[int | None, int]:
    return dict(s.exec(select(group, func.count(column)).where(where).group_by(group)).all())


def project_status(engine: Engine, name: str) -> dict[str, Any]:
    """Everything ``alloop status`` shows, as plain data (also the ``--json`` output)."""
    with session_scope(engine) as s:
        project = get_project(s, name)
        pid = project.id
        samples = Counter(
            (split, status)
            for split, status in s.exec(select(Sample.split, Sample.status).where(Sample.project_id == pid)).all()
        )
        history = rounds(s, pid)  # type: ignore[arg-type]
        models = {m.id: m for m in model_versions(s, pid)}  # type: ignore[arg-type]
        selected = _counts(s, Selection.id, Selection.project_id == pid, Selection.round_id)
        pushed = _counts(s, Task.id, Task.project_id == pid, Task.round_id)
        resolved = _counts(  # annotations deleted in the tool resolve nothing
            s, func.distinct(Annotation.task_id),
            (Annotation.project_id == pid)
            & ((Annotation.invalid_reason == None) | (Annotation.invalid_reason != DELETED)),  # noqa: E711
            Annotation.round_id,
        )
        labeled = _counts(
            s,
            func.distinct(Annotation.sample_id),
            (Annotation.project_id == pid) & (Annotation.valid == True) & (Annotation.cancelled == False),  # noqa: E712
            Annotation.round_id,
        )
        invalid = s.exec(
            select(func.count(col(Annotation.id))).where(Annotation.project_id == pid, Annotation.valid == False)  # noqa: E712
        ).one()
        final = next((m for m in models.values() if m.final), None)
    key, metric_name = headline(project.task)
    rows = []
    for r in history:
        mv = models.get(r.model_version_id) if r.model_version_id else None
        rows.append(
            {
                "round": r.number,
                "state": r.state,
                "strategy": r.strategy,
                "budget": r.budget,
                "selected": selected.get(r.id, 0),
                "pushed": pushed.get(r.id, 0),
                "resolved": resolved.get(r.id, 0),
                "labeled": labeled.get(r.id, 0),
                "train_labels": mv.n_labels if mv else 0,
                "accuracy": mv.metrics.get(key) if mv else None,
                "stop_kappa": mv.metrics.get("stop_kappa") if mv else None,
                "stop_uncertainty": mv.metrics.get("stop_uncertainty") if mv else None,
                "attempt": r.attempt,
                "last_error": r.last_error,
                "created_at": r.created_at.isoformat(),
                "completed_at": r.completed_at.isoformat() if r.completed_at else None,
            }
        )
    return {
        "project": project.name,
        "task": project.task,
        "metric": metric_name,
        "labels": project.labels,
        "status": project.status,
        "finished_reason": project.finished_reason,
        "samples": {
            "pool": samples[("pool", "ok")],
            "test": samples[("test", "ok")],
            "quarantined": sum(v for (split, st), v in samples.items() if st == "quarantined"),
        },
        "invalid_annotations": int(invalid),
        "next_action": (
            {"at": project.next_action_at.isoformat(), "what": project.next_action}
            if project.next_action_at is not None else None
        ),
        "rounds": rows,
        "final_model": (
            {"n_labels": final.n_labels, "accuracy": final.metrics.get(key)} if final else None
        ),
    }


def learning_curve(engine: Engine, name: str) -> list[tuple[int, float]]:
    """(labels, headline metric) of every model with a held-out score, in training order.

    The headline metric is the accuracy, or the mAP@0.5 for detection (:func:`headline`).
    """
    with session_scope(engine) as s:
        project = get_project(s, name)
        models = s.exec(
            select(ModelVersion).where(ModelVersion.project_id == project.id).order_by(col(ModelVersion.id))
        ).all()
    key = headline(project.task)[0]
    return [(m.n_labels, float(m.metrics[key])) for m in models if key in m.metrics and m.metrics[key] >= 0]


def labels_and_annotators(engine: Engine, name: str, rule: str = "majority") -> dict[str, Any]:
    """Training labels per class and, per annotator, how often they agree with the others.

    ``classes``: the aggregated (training) label of each labeled sample, counted per class.
    ``annotators``: per annotator, the samples they labeled (their latest valid label each), how many
    of those someone else labeled too (``shared``), and the share of those where their label is the
    aggregated one (``agreement``, None without shared samples). ``pairwise``: over every pair of
    annotators on one sample, the share that gave the same label (None with fewer than two).
    """
    from alloop.labels import Vote, _latest_per_annotator, aggregate

    with session_scope(engine) as s:
        project = get_project(s, name)
        rows = s.connection().execute(
            select(Annotation.sample_id, Annotation.annotator, Annotation.label, Annotation.updated_at).where(
                Annotation.project_id == project.id,
                Annotation.valid == True,  # noqa: E712
                Annotation.cancelled == False,  # noqa: E712
                col(Annotation.label).is_not(None),
            ).order_by(col(Annotation.id))
        ).all()
    votes = [Vote(*r) for r in rows]
    final = aggregate(votes, rule)
    per_sample = _latest_per_annotator(votes)
    labeled: Counter[str] = Counter()
    shared: Counter[str] = Counter()
    agreed: Counter[str] = Counter()
    pairs = same = 0
    for sid, vs in per_sample.items():
        for v in vs:
            labeled[v.annotator] += 1
            if len(vs) > 1:
                shared[v.annotator] += 1
                agreed[v.annotator] += v.label == final[sid]
        for i, a in enumerate(vs):
            for b in vs[i + 1:]:
                pairs += 1
                same += a.label == b.label
    return {
        "classes": dict(sorted(Counter(final.values()).items())),
        "annotators": [
            {"annotator": a, "labeled": n, "shared": shared[a],
             "agreement": agreed[a] / shared[a] if shared[a] else None}
            for a, n in sorted(labeled.items())
        ],
        "pairwise": same / pairs if pairs else None,
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(points: list[tuple[int, float]], path: _Out, title: str,
                        ylabel: str = "held-out accuracy") -> _Out:
    """The learning-curve figure (``alloop report``, the status page) as PNG, to a path or a binary file."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    x, y = zip(*points) if points else ((), ())
    ax.plot(x, y, marker="o")
    ax.set_xlabel("labeled samples")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_simulation(result: SimulationResult, path: Path, title: str) -> Path:
    """Mean accuracy per strategy with a band of ±1 standard deviation over seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    aubc = {row["strategy"]: row for row in result.table()}
    for name, runs in result.by_strategy().items():
        n = min(len(r.accuracy) for r in runs)
        x = np.asarray(runs[0].n_labels[:n])
        acc = np.array([r.accuracy[:n] for r in runs])
        mean, std = acc.mean(axis=0), acc.std(axis=0)
        label = f"{name} (AUBC {aubc[name]['aubc_mean']:.3f} ± {aubc[name]['aubc_std']:.3f})"
        style = {"color": "0.35", "linestyle": "--"} if name == "random" else {}
        (line,) = ax.plot(x, mean, marker=".", label=label, **style)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("labeled samples")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
