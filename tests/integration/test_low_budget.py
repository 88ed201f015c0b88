"""TypiClust and ProbCover in the real loop: cold start on given vectors, the project's classes
reaching ProbCover's purity rule."""

from __future__ import annotations

from sqlmodel import select

from alloop.loop.controller import Controller
from alloop.store.engine import session_scope
from alloop.store.models import Round, Sample, Selection
from tests.conftest import open_workspace, write_project


def run_round_1(pf):
    """Run the project to the end; round 1's strategy, picks (sample ids, by rank), saved scores and
    the scored positions that were candidates (not picked in round 0)."""
    import numpy as np

    from alloop.loop.artifacts import RoundScores, scores_path

    ws = open_workspace(pf)
    ws.validate()
    assert Controller(ws).run()[-1].finished
    with session_scope(ws.engine) as s:
        r1 = s.exec(select(Round).where(Round.number == 1)).one()
        picked = s.exec(select(Selection.sample_id).where(Selection.round_id == r1.id)
                        .order_by(Selection.rank)).all()
        before = set(s.exec(select(Selection.sample_id).where(Selection.round_id != r1.id)).all())
    scores = RoundScores.load(scores_path(ws.work_dir, 1))
    seed = ws.project().seed
    ws.close()
    return r1.strategy, picked, scores, np.flatnonzero(~np.isin(scores.sample_ids, list(before))), seed


def test_typiclust_cold_start_then_probcover_cover_the_classes(tmp_path):
    """Iris (3 classes): TypiClust's 3 picks in round 0 hit every class; ProbCover picks in round 1
    with delta from the purity rule on the project's 3 classes, none picked twice."""
    pf = write_project(
        tmp_path / "p",
        pool={"source": {"type": "bundled", "name": "iris"}, "test_fraction": 0.2},
        features={"name": "vector"},
        cold_start={"name": "typiclust"},
        strategy={"name": "probcover"},
        loop={"initial_size": 3, "batch_size": 4, "max_rounds": 2},
    )
    ws = open_workspace(pf)
    assert Controller(ws).run()[-1].finished
    with session_scope(ws.engine) as s:
        label = dict(s.exec(select(Sample.key, Sample.reference_label)).all())
        rounds = {r.number: (r.strategy, s.exec(
            select(Sample.key).join(Selection, Selection.sample_id == Sample.id)
            .where(Selection.round_id == r.id).order_by(Selection.rank)).all())
            for r in s.exec(select(Round))}
    assert [rounds[n][0] for n in (0, 1)] == ["typiclust", "probcover"]
    assert {label[k] for k in rounds[0][1]} == {"setosa", "versicolor", "virginica"}
    assert len(rounds[1][1]) == 4 and not set(rounds[0][1]) & set(rounds[1][1])
    ws.close()


def test_badge_in_the_loop_picks_from_the_saved_probabilities_and_penultimate_features(tmp_path):
    """Breast cancer, scaled logistic regression: round 1's picks are badge_select over the round's
    saved scores (probabilities and the scaled features) with the round's seed."""

    from alloop.rng import derive_rng
    from alloop.strategies.badge import badge_select

    pf = write_project(
        tmp_path / "p",
        pool={"source": {"type": "bundled", "name": "breast_cancer"}, "test_fraction": 0.2},
        features={"name": "vector"},
        learner={"name": "sklearn", "params": {"scale": True}},
        strategy={"name": "badge"},
        loop={"initial_size": 10, "batch_size": 8, "max_rounds": 2},
    )
    strategy, picked, scores, cand, seed = run_round_1(pf)
    assert strategy == "badge"
    assert scores.model_arrays["penultimate"].shape == (len(scores), 30)
    want, _ = badge_select(scores.proba, scores.model_arrays["penultimate"], 8, candidates=cand,
                           rng=derive_rng(seed, "round", 1, "select"))
    assert picked == scores.sample_ids[want].tolist()


def test_a_learner_without_penultimate_features_is_refused_for_badge(tmp_path):
    import pytest

    from alloop.errors import ConfigError

    pf = write_project(
        tmp_path / "p",
        pool={"source": {"type": "bundled", "name": "iris"}, "test_fraction": 0.2},
        features={"name": "vector"},
        learner={"name": "sklearn", "params": {"estimator": "sklearn.ensemble.RandomForestClassifier", "params": {}}},
        strategy={"name": "badge"},
    )
    ws = open_workspace(pf)
    with pytest.raises(ConfigError, match="RandomForestClassifier.*cannot give them.*LogisticRegression"):
        ws.validate()
    ws.close()


def test_stabilizing_predictions_stop_the_loop_where_the_rule_first_fires(tmp_path):
    """Breast cancer, logistic regression, margin: the project finishes when the mean stop-set
    kappa of the last 3 model pairs first reaches 0.99, recomputed here from the models' metrics."""
    import numpy as np

    from alloop.cli.run import rounds_table
    from alloop.report import project_status
    from alloop.store.models import ModelVersion, Project

    pf = write_project(
        tmp_path / "p",
        pool={"source": {"type": "bundled", "name": "breast_cancer"}, "test_fraction": 0.2},
        features={"name": "vector"},
        learner={"name": "sklearn", "params": {"scale": True}},
        strategy={"name": "margin"},
        loop={"initial_size": 10, "batch_size": 10, "max_rounds": 30, "stop_kappa": 0.99, "stop_set_size": 200},
    )
    ws = open_workspace(pf)
    assert Controller(ws).run()[-1].finished
    with session_scope(ws.engine) as s:
        kappas = [m.metrics.get("stop_kappa") for m in s.exec(
            select(ModelVersion).where(ModelVersion.final == False).order_by(ModelVersion.id))]  # noqa: E712
        reason = s.exec(select(Project)).one().finished_reason
    assert kappas[0] is None and all(k is not None for k in kappas[1:])
    means = [np.mean(kappas[i - 2 : i + 1]) for i in range(3, len(kappas))]
    assert means[-1] >= 0.99 and all(m < 0.99 for m in means[:-1]), means
    assert reason.startswith("predictions stabilized") and len(kappas) < 30
    assert len(np.load(ws.work_dir / "stop_set.npy")) == 200
    status = project_status(ws.engine, ws.name)
    assert [r["stop_kappa"] for r in status["rounds"]] == [None, *kappas]  # round 0 trains no model
    assert "kappa" in [c.header for c in rounds_table(status).columns]
    ws.close()


def test_simulate_reports_labels_saved_and_where_stopping_rules_would_stop(tmp_path):
    import json

    from tests.conftest import run_cli

    pf = write_project(tmp_path / "p", pool={"source": {"type": "bundled", "name": "iris"}, "test_fraction": 0.2},
                       features={"name": "vector"})
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("simulate", "-p", str(pf), "--strategies", "margin,random", "--seeds", "2", "--rounds", "5",
                "--initial-size", "6", "--batch-size", "6", "--jobs", "1", "--stopping")
    assert r.returncode == 0, r.stderr
    assert "Labels saved" in r.stdout and "Stopping without a test set" in r.stdout
    data = json.loads((tmp_path / "p" / ".alloop" / "simulate" / "results.json").read_text())
    (saved,) = data["labels_saved"]
    assert saved["strategy"] == "margin" and saved["paired_seeds"] == 2
    rules = {row["rule"].split(" (")[0] for row in data["stopping"]}
    assert rules == {"stabilizing predictions", "overall uncertainty"}
    for run in data["runs"]:  # every round model after the first measured against the one before it
        assert len(run["stop"]) == len(run["n_labels"])
        assert all("stop_kappa" in m for m in run["stop"][1:-1]) and "stop_uncertainty" in run["stop"][0]


def test_bald_over_an_ensemble_in_the_loop_and_a_single_model_refused(tmp_path):
    import pytest

    from alloop.errors import ConfigError
    from alloop.strategies._scores import top_k
    from alloop.strategies.committee import bald

    pf = write_project(
        tmp_path / "p",
        pool={"source": {"type": "bundled", "name": "iris"}, "test_fraction": 0.2},
        features={"name": "vector"},
        learner={"name": "ensemble", "params": {"members": 3}},
        strategy={"name": "bald"},
        loop={"initial_size": 9, "batch_size": 5, "max_rounds": 2},
    )
    _, picked, scores, cand, _ = run_round_1(pf)
    members = scores.model_arrays["members"]
    assert members.shape == (len(scores), 3, 3)
    assert picked == scores.sample_ids[cand[top_k(bald(members[cand]), 5)]].tolist()
    pf = write_project(tmp_path / "q", pool={"source": {"type": "bundled", "name": "iris"}},
                       features={"name": "vector"}, strategy={"name": "vote_entropy"})
    ws = open_workspace(pf)
    with pytest.raises(ConfigError, match="each ensemble member.*name = \"ensemble\""):
        ws.validate()
    ws.close()


def test_bald_over_the_kd_students_mc_dropout_members(tmp_path):
    """The plain KD student trained with dropout: round 1's BALD picks come from its saved Monte-
    Carlo dropout members; without dropout the same project is refused, naming the fix."""
    import pytest

    from alloop.errors import ConfigError
    from alloop.strategies._scores import top_k
    from alloop.strategies.committee import bald

    student = {"kd_weight": 0, "alpha": 0, "epochs": 5, "dropout": 0.3, "mc_samples": 8}
    project = dict(pool={"source": {"type": "bundled", "name": "iris"}, "test_fraction": 0.2},
                   features={"name": "vector"}, strategy={"name": "bald"},
                   loop={"initial_size": 9, "batch_size": 5, "max_rounds": 2})
    pf = write_project(tmp_path / "p", learner={"name": "kd_student", "params": student}, **project)
    _, picked, scores, cand, _ = run_round_1(pf)
    members = scores.model_arrays["members"]
    assert members.shape == (len(scores), 8, 3)
    assert picked == scores.sample_ids[cand[top_k(bald(members[cand]), 5)]].tolist()
    del student["dropout"]
    ws = open_workspace(write_project(tmp_path / "q", learner={"name": "kd_student", "params": student}, **project))
    with pytest.raises(ConfigError, match="kd_student trained with dropout"):
        ws.validate()
    ws.close()
