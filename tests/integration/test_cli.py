"""The real `alloop` command in subprocesses: happy path and every bad input the spine promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from sqlmodel import select

from alloop.store.engine import session_scope
from tests.conftest import open_workspace, run_cli, write_project
from tests.integration.snapshot import snapshot


def _db(folder: Path) -> str:
    return f"sqlite:///{folder / '.alloop' / 'alloop.db'}"


def _images(root: Path, n_per_class: int = 5, corrupt: bool = False) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    for label in (0, 1, 2):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(d.target == label)[:n_per_class]:
            Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).save(root / str(label) / f"{i}.png")
    if corrupt:
        (root / "2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return root


def test_init_import_run_status_report(tmp_path):
    proj = tmp_path / "p"
    r = run_cli("init", str(proj), "--dataset", "digits", "--rounds", "3", "--batch-size", "10")
    assert r.returncode == 0, r.stderr
    assert (proj / "alloop.toml").exists()
    r = run_cli("import", "-p", str(proj))
    assert r.returncode == 0, r.stderr
    assert "1797 added" in r.stdout
    r = run_cli("import", "-p", str(proj))  # idempotent
    assert "0 added, 1797 unchanged" in r.stdout
    r = run_cli("run", "-p", str(proj))
    assert r.returncode == 0, r.stderr
    assert "finished: max_rounds reached" in r.stdout
    r = run_cli("status", "-p", str(proj), "--json")
    status = json.loads(r.stdout)
    assert status["status"] == "finished"
    assert [x["state"] for x in status["rounds"]] == ["CLOSED"] * 3
    assert [x["selected"] for x in status["rounds"]] == [20, 10, 10]
    assert status["samples"]["pool"] + status["samples"]["test"] == 1797
    r = run_cli("report", "-p", str(proj))
    png = proj / ".alloop" / "report" / "learning_curve.png"
    assert r.returncode == 0 and png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_run_once_does_a_single_step(tmp_path):
    pf = write_project(tmp_path / "p")
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("run", "--once", "-p", str(pf))
    assert r.returncode == 0 and "round 0 created" in r.stdout
    assert snapshot(_db(tmp_path / "p"))["rounds"] == [(0, "CREATED", "random", 20)]


def test_budget_larger_than_pool(tmp_path):
    images = _images(tmp_path / "imgs", n_per_class=5)
    source = {"type": "folder", "path": str(images), "labels_from_subfolders": True}
    pf = write_project(tmp_path / "p", pool={"source": source}, loop={"initial_size": 30})
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 2
    assert "Asked to select 30 samples but only 15 unlabeled samples remain" in r.stderr
    assert "loop.initial_size" in r.stderr
    assert snapshot(_db(tmp_path / "p"))["rounds"] == []  # nothing written


def test_unknown_strategy_lists_known_ones(tmp_path):
    pf = write_project(tmp_path / "p", strategy={"name": "query_by_magic"})
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 2
    assert "Unknown strategy 'query_by_magic'" in r.stderr and "margin" in r.stderr and "coreset" in r.stderr
    assert snapshot(_db(tmp_path / "p"))["rounds"] == []  # refused before any work


def test_unknown_learner_lists_known_ones(tmp_path):
    pf = write_project(tmp_path / "p", learner={"name": "xgboost"})
    run_cli("import", "-p", str(pf))
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 2 and "Unknown learner 'xgboost'" in r.stderr and "sklearn" in r.stderr


def test_empty_pool(tmp_path):
    pf = write_project(tmp_path / "p")
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 2 and "has no readable samples. Run `alloop import` first" in r.stderr
    (tmp_path / "empty").mkdir()
    pf = write_project(tmp_path / "q", pool={"source": {"type": "folder", "path": str(tmp_path / "empty")}},
                       project={"name": "q", "labels": ["a", "b"]})
    r = run_cli("import", "-p", str(pf))
    assert r.returncode == 2 and "empty" in r.stderr.lower()


def test_corrupt_image_is_quarantined_not_fatal(tmp_path):
    images = _images(tmp_path / "imgs", corrupt=True)
    source = {"type": "folder", "path": str(images), "labels_from_subfolders": True}
    pf = write_project(tmp_path / "p", pool={"source": source},
                       loop={"initial_size": 4, "batch_size": 4, "max_rounds": 3})
    r = run_cli("import", "-p", str(pf))
    assert r.returncode == 0, r.stderr
    assert "15 added" in r.stdout and "1 quarantined" in r.stdout
    assert "2/broken.png" in r.stdout
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 0, r.stderr
    snap = snapshot(_db(tmp_path / "p"))
    assert snap["quarantined"] == ["2/broken.png"]
    assert "2/broken.png" not in {k for _, _, k, _ in snap["selections"]}


def test_duplicate_keys_refused_and_nothing_written(tmp_path):
    texts = tmp_path / "t.jsonl"
    texts.write_text(
        '{"id": "a", "text": "good movie", "label": "pos"}\n'
        '{"id": "b", "text": "bad movie", "label": "neg"}\n'
        '{"id": "a", "text": "again", "label": "pos"}\n'
    )
    pf = write_project(tmp_path / "p", project={"name": "t", "task": "text"}, features={"name": "hashing"},
                       pool={"source": {"type": "texts", "path": str(texts)}})
    r = run_cli("import", "-p", str(pf))
    assert r.returncode == 2
    assert "'a'" in r.stderr and "1" in r.stderr and "3" in r.stderr and "duplicate" in r.stderr.lower()
    r = run_cli("status", "-p", str(pf), "--json")
    assert json.loads(r.stdout)["samples"] == {"pool": 0, "test": 0, "quarantined": 0}


def test_wrong_config_field(tmp_path):
    pf = write_project(tmp_path / "p", loop={"batchsize": 5})
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 2
    assert "unknown field 'loop.batchsize'; did you mean 'batch_size'?" in r.stderr
    assert not (tmp_path / "p" / ".alloop").exists()  # nothing created


def test_init_refuses_to_overwrite(tmp_path):
    assert run_cli("init", str(tmp_path)).returncode == 0
    r = run_cli("init", str(tmp_path))
    assert r.returncode == 2 and "--force" in r.stderr


def test_simulate_writes_table_and_figure(tmp_path):
    pf = write_project(tmp_path / "p")
    r = run_cli("simulate", "-p", str(pf), "--seeds", "1")
    assert r.returncode == 2 and "Run `alloop import` first" in r.stderr
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("simulate", "-p", str(pf), "--strategies", "margin,random", "--seeds", "2", "--rounds", "4",
                "--batch-size", "5", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert "AUBC" in r.stdout and "margin" in r.stdout and "random" in r.stdout
    out = tmp_path / "p" / ".alloop" / "simulate"
    data = json.loads((out / "results.json").read_text())
    assert len(data["runs"]) == 4
    assert all(run["n_labels"] == [20, 25, 30, 35] for run in data["runs"])
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_simulate_batch_size_one_and_other_estimator(tmp_path):
    pf = write_project(tmp_path / "p")
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("simulate", "-p", str(pf), "--strategies", "entropy", "--seeds", "1", "--rounds", "4",
                "--batch-size", "1", "--initial-size", "10", "--estimator", "sklearn.naive_bayes.GaussianNB",
                "--estimator-params", "{}", "--jobs", "1")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "p" / ".alloop" / "simulate" / "results.json").read_text())
    assert data["runs"][0]["n_labels"] == [10, 11, 12, 13]


def test_init_sets_encoder_and_cold_start_and_refuses_unknown_names(tmp_path):
    texts = tmp_path / "t.jsonl"
    texts.write_text('{"id": "a", "text": "good", "label": "pos"}\n{"id": "b", "text": "bad", "label": "neg"}\n')
    r = run_cli("init", str(tmp_path / "p"), "--texts", str(texts), "--features", "transformers",
                "--cold-start", "ideal")
    assert r.returncode == 0, r.stderr
    from alloop.config import load_config

    cfg, _ = load_config(tmp_path / "p")
    assert (cfg.features.name, cfg.cold_start.name, cfg.project.task) == ("transformers", "ideal", "text")
    for args, message in ((["--features", "bert"], "Unknown encoder 'bert' for --features. Known encoders:"),
                          (["--cold-start", "idael"], "Unknown strategy 'idael' for --cold-start. Known strategies:"),
                          (["--strategy", "query_by_magic"], "Unknown strategy 'query_by_magic' for --strategy.")):
        r = run_cli("init", str(tmp_path / "q"), *args)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert not (tmp_path / "q" / "alloop.toml").exists()


def test_init_detection_project_from_truth_proposals_and_a_trainer(tmp_path):
    from alloop.config import load_config

    (tmp_path / "imgs").mkdir()
    r = run_cli("init", str(tmp_path / "p"), "--images", str(tmp_path / "imgs"),
                "--annotations", str(tmp_path / "t.json"), "--proposals", str(tmp_path / "yolo.onnx"),
                "--trainer", "{python} train.py")
    assert r.returncode == 0, r.stderr
    cfg, _ = load_config(tmp_path / "p")
    assert cfg.project.task == "detection" and (cfg.strategy.name, cfg.cold_start.name) == ("ofds", "ofds")
    assert cfg.pool.source.annotations == tmp_path / "t.json" and cfg.pool.test_fraction == 0.3
    assert (cfg.proposals.source, cfg.proposals.path) == ("onnx", tmp_path / "yolo.onnx")
    assert cfg.learner.name == "command" and cfg.learner.params["command"] == "{python} train.py"
    r = run_cli("init", str(tmp_path / "q"), "--images", str(tmp_path / "imgs"),
                "--annotations", str(tmp_path / "t.json"))
    cfg, _ = load_config(tmp_path / "q")  # truth only: random images, no model, no proposals
    assert (cfg.strategy.name, cfg.cold_start.name, cfg.learner.name, cfg.proposals) == (
        "random", "random", "none", None)
    r = run_cli("init", str(tmp_path / "r"), "--proposals", "a.jsonl")
    assert r.returncode == 2 and "give its --images folder too" in r.stderr


def test_object_level_strategy_in_a_project_is_refused_with_the_way_out(tmp_path):
    pf = write_project(tmp_path / "p", cold_start={"name": "ofds"})
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cold_start strategy 'ofds' selects from object proposals (boxes), which only detection projects" in r.stderr
    assert "'classification'" in r.stderr and "'coreset'" in r.stderr
    ws = open_workspace(pf, do_import=False)
    with session_scope(ws.engine) as s:
        from alloop.store.models import Selection

        assert s.exec(select(Selection)).all() == []
    ws.close()


def test_a_warning_of_the_estimator_is_shown_once_per_run_with_its_round(tmp_path):
    """LogisticRegression(max_iter=1) warns on every fit (ConvergenceWarning): once per run, not per round."""
    lr = {"name": "sklearn", "params": {"estimator": "sklearn.linear_model.LogisticRegression",
                                         "params": {"max_iter": 1}}}
    pf = write_project(tmp_path / "p", learner=lr, loop={"initial_size": 20, "batch_size": 10, "max_rounds": 4})
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("ConvergenceWarning") == 1, r.stderr
    said = " ".join(r.stderr.split())
    assert "ConvergenceWarning (first seen in round 1, training; shown once): lbfgs failed" in said
    r = run_cli("simulate", "-p", str(pf), "--strategies", "margin,random", "--seeds", "3", "--rounds", "4",
                "--batch-size", "5", "--jobs", "2", "--estimator", "sklearn.linear_model.LogisticRegression",
                "--estimator-params", '{"max_iter": 1}')
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("ConvergenceWarning") == 1, r.stderr
    assert "ConvergenceWarning (first seen in run " in r.stderr and ", round 1, training" in " ".join(r.stderr.split())
