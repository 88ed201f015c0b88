"""ActiveKD end to end: the distilled student, a teacher, PCoreSet, in the real loop and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sqlmodel import select

from alloop.loop.controller import Controller
from alloop.store.engine import session_scope
from alloop.store.models import Sample
from tests.conftest import open_workspace, run_cli, write_project
from tests.helpers.images import write_digit_folders

KD = {"name": "kd_student", "params": {"epochs": 5, "min_steps": 150}}


def write_teacher(ws, path: Path, accuracy: float = 0.7, seed: int = 0) -> Path:
    """A noisy teacher from the known labels: right with probability ~accuracy, soft."""
    rng = np.random.default_rng(seed)
    with session_scope(ws.engine) as s:
        rows = s.exec(select(Sample.key, Sample.reference_label)).all()
    labels = ws.project().labels
    keys, proba = [], []
    for key, truth in rows:
        logits = rng.normal(scale=1.0, size=len(labels))
        if rng.random() < accuracy:
            logits[labels.index(truth)] += 3.0
        p = np.exp(logits) / np.exp(logits).sum()
        keys.append(key)
        proba.append(p)
    np.savez(path, keys=np.array(keys), labels=np.array(labels), proba=np.array(proba))
    return path


def test_kd_student_with_pcoreset_runs_end_to_end(tmp_path):
    folder = tmp_path / "p"
    pf = write_project(folder, learner=KD, strategy={"name": "pcoreset"},
                       loop={"initial_size": 10, "batch_size": 10, "max_rounds": 3})
    ws = open_workspace(pf)
    write_teacher(ws, folder / "teacher.npz")
    ws.close()
    pf = write_project(folder, learner=KD, strategy={"name": "pcoreset"},
                       teacher={"name": "predictions", "params": {"path": "teacher.npz"}},
                       loop={"initial_size": 10, "batch_size": 10, "max_rounds": 3})
    ws = open_workspace(pf, do_import=False)
    results = Controller(ws).run()
    assert results[-1].finished
    with session_scope(ws.engine) as s:
        from alloop.store.models import ModelVersion, Round

        strategies = [r.strategy for r in s.exec(select(Round).order_by(Round.number))]
        models = s.exec(select(ModelVersion).order_by(ModelVersion.id)).all()
    assert strategies == ["random", "pcoreset", "pcoreset"]
    assert [m.n_labels for m in models] == [10, 20, 30]
    assert all(m.learner == "kd_student" for m in models)
    # 30 labels of 10 classes + a 70%-right teacher: the student beats the teacher's level of chance
    assert models[-1].metrics["accuracy"] > 0.6
    teacher_dirs = [d.name for d in (ws.cache_dir / "features").iterdir() if d.name.startswith("teacher-")]
    assert len(teacher_dirs) == 1  # teacher probabilities cached once for the pool
    ws.close()


def test_simulate_compares_strategies_under_activekd(tmp_path):
    folder = tmp_path / "p"
    pf = write_project(folder, learner=KD, loop={"initial_size": 10, "batch_size": 10, "max_rounds": 3})
    assert run_cli("import", "-p", str(pf)).returncode == 0
    ws = open_workspace(pf, do_import=False)
    write_teacher(ws, folder / "teacher.npz")
    ws.close()
    write_project(folder, learner=KD, teacher={"name": "predictions", "params": {"path": "teacher.npz"}},
                  loop={"initial_size": 10, "batch_size": 10, "max_rounds": 3})
    r = run_cli("simulate", "-p", str(pf), "--strategies", "pcoreset,coreset,entropy,random", "--seeds", "2",
                "--rounds", "3", "--initial-per-class", "--batch-size", "10", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    data = json.loads((folder / ".alloop" / "simulate" / "results.json").read_text())
    assert sorted({run["strategy"] for run in data["runs"]}) == ["coreset", "entropy", "pcoreset", "random"]
    assert all(run["n_labels"] == [10, 20, 30] for run in data["runs"])


def test_initial_per_class_gives_one_label_of_each_class():
    from alloop.simulate import _per_class_keys

    samples = [dict(key=f"{c}/{i}", reference_label=str(c)) for c in range(4) for i in range(6)]
    test = {"0/0", "0/1", "0/2", "0/3", "0/4"}  # only 0/5 of class 0 may be picked
    keys = _per_class_keys(samples, ["0", "1", "2", "3"], seed=7, test=test)
    assert [k.split("/")[0] for k in keys] == ["0", "1", "2", "3"] and keys[0] == "0/5"
    assert keys == _per_class_keys(samples, ["0", "1", "2", "3"], seed=7, test=test)
    assert keys != _per_class_keys(samples, ["0", "1", "2", "3"], seed=8, test=test)


def test_clip_encoder_teacher_student_and_pcoreset_in_one_loop(tmp_path):
    """The whole ActiveKD path with a real (tiny, local) open_clip model: features, zero-shot teacher."""
    from tests.helpers.tiny_clip import TINY_CLIP_NAME, make_tiny_clip

    config, ckpt = make_tiny_clip(tmp_path / "clip")
    clip = {"model": TINY_CLIP_NAME, "pretrained": str(ckpt), "model_config": str(config)}
    write_digit_folders(tmp_path / "imgs", classes=10, per_class=8)
    pf = write_project(
        tmp_path / "p",
        pool={"source": {"type": "folder", "path": str(tmp_path / "imgs"), "labels_from_subfolders": True},
              "test_fraction": 0.25},
        features={"name": "open_clip", "params": clip},
        teacher={"name": "clip_zeroshot", "params": {**clip, "class_names": {str(d): f"digit {d}" for d in range(10)}}},
        learner=KD, strategy={"name": "pcoreset"},
        loop={"initial_size": 10, "batch_size": 10, "max_rounds": 2},
    )
    ws = open_workspace(pf)
    results = Controller(ws).run()
    assert results[-1].finished
    with session_scope(ws.engine) as s:
        from alloop.store.models import ModelVersion, Round

        assert [r.strategy for r in s.exec(select(Round).order_by(Round.number))] == ["random", "pcoreset"]
        assert [m.learner for m in s.exec(select(ModelVersion))] == ["kd_student", "kd_student"]
    folders = sorted(d.name.split("-")[0] for d in (ws.cache_dir / "features").iterdir())
    # one image-feature folder shared by the encoder and the teacher, one of teacher probabilities
    assert folders == ["open_clip", "teacher"]
    ws.close()
