"""The real loop on the bundled digits images, a SQLite file (or PostgreSQL) and the simulated annotator."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sqlmodel import select

from alloop.errors import LockedError, StoreError
from alloop.loop.controller import Controller
from alloop.report import learning_curve, project_status
from alloop.store.engine import session_scope
from alloop.store.models import Round, Sample, Task
from tests.conftest import open_workspace, write_project
from tests.integration.snapshot import assert_no_duplicates, snapshot


@pytest.fixture
def db_ws(tmp_path, db_url):
    """The digits project on SQLite, then on PostgreSQL."""
    ws = open_workspace(write_project(tmp_path / "proj", database=db_url))
    yield ws
    ws.close()


def test_full_session_reaches_the_stop_policy(db_ws):
    digits_ws = db_ws
    results = Controller(digits_ws).run()
    actions = [r.action for r in results]
    assert actions[:7] == ["created", "trained", "scored", "selected", "pushed", "collecting", "closed"]
    assert actions[-1] == "finished" and "max_rounds" in results[-1].message
    snap = snapshot(str(digits_ws.engine.url))
    assert_no_duplicates(snap)
    assert [(n, st, strat, b) for n, st, strat, b in snap["rounds"]] == [
        (0, "CLOSED", "random", 20), (1, "CLOSED", "margin", 10), (2, "CLOSED", "margin", 10)]
    assert len(snap["tasks"]) == len(snap["annotations"]) == 40
    # round 0 has no model; rounds 1, 2 and the final one do
    assert [(m[0], m[1], m[2]) for m in snap["models"]] == [(1, False, 20), (2, False, 30), (None, True, 40)]
    curve = learning_curve(digits_ws.engine, digits_ws.name)
    assert [n for n, _ in curve] == [20, 30, 40]
    assert curve[-1][1] > 0.6  # 40 labels of 10 digit classes
    # a finished project does nothing more
    assert Controller(digits_ws).tick().action == "idle"


def test_same_seed_same_run(tmp_path, postgres_url):
    snaps = []
    for name, database in (("a", None), ("b", postgres_url)):  # SQLite, then PostgreSQL: the same run
        ws = open_workspace(write_project(tmp_path / name, database=database))
        Controller(ws).run()
        snaps.append(snapshot(str(ws.engine.url)))
        ws.close()
    assert snaps[0] == snaps[1]
    other = open_workspace(write_project(tmp_path / "c", project={"name": "t", "seed": 1}))
    Controller(other).run()
    assert snapshot(str(other.engine.url))["selections"] != snaps[0]["selections"]
    other.close()


def test_selection_never_picks_test_split_or_labeled(db_ws):
    digits_ws = db_ws
    Controller(digits_ws).run()
    with session_scope(digits_ws.engine) as s:
        test_ids = set(s.exec(select(Sample.id).where(Sample.split == "test")).all())
    snap = snapshot(str(digits_ws.engine.url))
    with session_scope(digits_ws.engine) as s:
        by_key = dict(s.exec(select(Sample.key, Sample.id)).all())
    assert not {by_key[k] for _, _, k, _ in snap["selections"]} & test_ids


def test_second_controller_is_locked_out(db_ws):
    with Controller(db_ws):
        other = Controller(db_ws)
        with pytest.raises(LockedError, match="another process"):
            other.tick()


def test_coreset_and_least_confidence_run_in_the_loop(tmp_path):
    for strategy in ("coreset", "least_confidence", "entropy"):
        ws = open_workspace(write_project(tmp_path / strategy, strategy={"name": strategy}))
        Controller(ws).run()
        snap = snapshot(str(ws.engine.url))
        assert [r[2] for r in snap["rounds"]] == ["random", strategy, strategy]
        assert_no_duplicates(snap)
        ws.close()


def _image_folder(root, n_per_class=12):
    from sklearn.datasets import load_digits

    d = load_digits()
    for label in (0, 1, 2):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        idx = np.flatnonzero(d.target == label)[:n_per_class]
        for i in idx:
            Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).save(root / str(label) / f"{i}.png")
    return root


def test_file_corrupted_after_import_is_quarantined_and_loop_goes_on(tmp_path, db_url):
    images = _image_folder(tmp_path / "imgs")
    pf = write_project(
        tmp_path / "proj",
        database=db_url,
        pool={"source": {"type": "folder", "path": str(images), "labels_from_subfolders": True}},
        loop={"initial_size": 6, "batch_size": 4, "max_rounds": 3},
    )
    ws = open_workspace(pf)
    victim = sorted((images / "1").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:20])  # truncated after import
    Controller(ws).run()
    status = project_status(ws.engine, ws.name)
    assert status["status"] == "finished"
    assert status["samples"]["quarantined"] == 1
    with session_scope(ws.engine) as s:
        q = s.exec(select(Sample).where(Sample.status == "quarantined")).one()
    assert q.key == f"1/{victim.name}" and q.reason
    assert q.key not in {k for _, _, k, _ in snapshot(str(ws.engine.url))["selections"]}
    ws.close()


def test_failed_step_is_recorded_then_failed_then_retried(tmp_path, db_url):
    # a learner that fails for real once trained: 50 neighbours but only 20 labels in round 1
    bad = {"name": "sklearn",
           "params": {"estimator": "sklearn.neighbors.KNeighborsClassifier", "params": {"n_neighbors": 50}}}
    pf = write_project(tmp_path / "p", database=db_url, learner=bad)
    ws = open_workspace(pf)
    ctl = Controller(ws)
    while True:
        r = ctl.tick()
        if r.action == "created" and r.round == 1:
            break
    for _ in range(3):
        with pytest.raises(ValueError, match="n_neighbors"):
            ctl.tick()
    with session_scope(ws.engine) as s:
        rnd = s.exec(select(Round).where(Round.number == 1)).one()
    assert (rnd.state, rnd.failed_from, rnd.attempt) == ("FAILED", "CREATED", 3)
    assert "n_neighbors" in rnd.last_error
    with pytest.raises(StoreError, match="alloop retry"):
        ctl.tick()
    ws.close()
    fixed = open_workspace(write_project(tmp_path / "p", database=db_url), do_import=False)  # the user fixes the file
    ctl = Controller(fixed)
    ctl.retry()
    assert ctl.tick().action == "trained"
    fixed.close()


def test_nan_probabilities_from_a_model_count_as_a_failed_attempt_not_a_user_error(tmp_path, db_url):
    """Bad arrays handed to a kernel (InvalidInputError) are the model's failure: retried, then FAILED."""
    from alloop.errors import ConfigError, InvalidInputError

    nan = {"name": "sklearn", "params": {"estimator": "tests.helpers.estimators.NanProbaClassifier", "params": {}}}
    ws = open_workspace(write_project(tmp_path / "p", database=db_url, learner=nan))
    ctl = Controller(ws)
    while (r := ctl.tick()).action != "scored" or r.round != 1:
        pass
    for attempt in (1, 2):
        with pytest.raises(InvalidInputError, match="proba must be finite") as err:
            ctl.tick()
        assert not isinstance(err.value, ConfigError)
        assert f"attempt {attempt} of 3" in " ".join(err.value.__notes__)
        with session_scope(ws.engine) as s:
            rnd = s.exec(select(Round).where(Round.number == 1)).one()
        assert (rnd.state, rnd.attempt) == ("SCORED", attempt) and rnd.last_error.startswith("InvalidInputError")
    with pytest.raises(InvalidInputError):
        ctl.tick()
    with session_scope(ws.engine) as s:
        rnd = s.exec(select(Round).where(Round.number == 1)).one()
    assert (rnd.state, rnd.failed_from, rnd.attempt) == ("FAILED", "SCORED", 3)
    ws.close()


def test_final_annotations_are_not_pulled_again(db_ws):
    """The simulated annotator's answers are final: a tick asks it about unanswered tasks only (none
    left: no pull at all), yet every task ends with its annotation (the same ones as a full pull)."""
    ws = db_ws
    asked: list[list[str]] = []
    conn = ws.connector
    assert conn.final_annotations is True
    pull = conn.pull

    def recording_pull(tasks):
        asked.append([t.sample_key for t in tasks])
        return pull(tasks)

    conn.pull = recording_pull  # the real oracle answers; this only records what it was asked
    Controller(ws).run()
    snap = snapshot(str(ws.engine.url))
    assert len(snap["tasks"]) == len(snap["annotations"]) == 40
    with session_scope(ws.engine) as s:
        rounds = {r.id: r.number for r in s.exec(select(Round))}
        round_of_key = {smp.key: rounds[t.round_id] for t, smp in s.exec(
            select(Task, Sample).where(Task.sample_id == Sample.id))}
    assert len(asked) == 3  # one pull per round: the second collect tick finds nothing unanswered
    for i, keys in enumerate(asked):
        assert {round_of_key[k] for k in keys} == {i}  # only that round's tasks, never older ones
