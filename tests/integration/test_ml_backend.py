"""``alloop serve`` as Label Studio's ML backend, against the real Label Studio server: registered
through Label Studio's API (``alloop labelstudio connect``), "Retrieve Predictions" (the Data
Manager action) storing the round model's output, 1,000 tasks within Label Studio's predict time
limit, and "Start Training" (``/api/ml/<id>/train``) closing the collecting round."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlmodel import func, select

from alloop.loop.controller import Controller
from alloop.store.arrays import arrays_of
from alloop.store.engine import make_engine, session_scope
from alloop.store.models import Annotation, Round, Sample
from tests.conftest import open_workspace, run_cli, write_project
from tests.integration import ls_support as lss
from tests.integration.test_detection import db, make_project, object_rows, pool_data  # noqa: F401 (a fixture)
from tests.integration.test_serve import DIGIT, SECRET, _free_port, _kill, _rounds, _serve, _stop, _wait

USER, PASSWORD = "labelstudio", "ml-backend-password-0123456789abcdef"
ML_ENV = {"ALLOOP_ML_BACKEND_USER": USER, "ALLOOP_ML_BACKEND_PASSWORD": PASSWORD}
#: Label Studio's default time limit for a /predict call (ML_TIMEOUT_PREDICT, ml/api_connector.py)
LS_PREDICT_TIMEOUT_S = 100.0


def _count(db: str, what) -> int:
    engine = make_engine(db)
    with session_scope(engine) as s:
        n = int(s.exec(select(func.count()).select_from(what)).one())
    engine.dispose()
    return n


def _expected(pf: Path, keys: list[str], number: int) -> dict[str, tuple[str, float]]:
    """The round's model (loaded from its artifact) on the samples' features: ``{key: (label, score)}``."""
    ws = open_workspace(pf, do_import=False)
    try:
        ctl = Controller(ws, use_lock=False)
        project = ws.project()
        with session_scope(ws.engine) as s:
            rnd = s.exec(select(Round).where(Round.number == number)).one()
            ids = dict(s.exec(select(Sample.key, Sample.id).where(Sample.key.in_(keys))).all())  # type: ignore[attr-defined]
        model = ctl.env.models.of(rnd)
        arrays = arrays_of(ws.engine, sorted(ids.values()))
        kept, X = ctl.env.data.features(project.id, arrays)
        P = model.predict_proba(X)
        key_of = {i: k for k, i in ids.items()}
        return {key_of[int(i)]: (project.labels[int(np.argmax(p))], float(np.max(p))) for i, p in zip(kept.ids, P)}
    finally:
        ws.close()


def test_label_studio_connects_alloop_as_ml_backend_retrieves_predictions_and_starts_training(label_studio, tmp_path):
    folder = Path(label_studio.document_root) / "mlb"
    pf = write_project(folder, project={"name": "mlb", "seed": 0}, connector={"name": "label_studio"},
                       loop={"initial_size": 6, "batch_size": 4, "max_rounds": 6}, serve={"interval_s": 3600})
    ws = open_workspace(pf)
    db = str(ws.engine.url)
    ws.close()
    port, log = _free_port(), tmp_path / "serve.log"
    serve_url = f"http://127.0.0.1:{port}"
    ls = lss.client()
    who = lss.users(ls, ["mia"])["mia"]
    proc = _serve([pf], port, log, **ML_ENV)
    try:
        pid = _wait(lambda: next((p.id for p in ls.projects.list(title="alloop: mlb") if p.title == "alloop: mlb"),
                                 None), "the Label Studio project", proc=proc, log=log)
        _wait(lambda: _rounds(db) == [(0, "COLLECTING")], "round 0 collecting", proc=proc, log=log)
        # round 0 labeled: round 1's model is trained, its tasks pushed with its pre-annotations
        for t in lss.tasks(ls, pid):
            ls.annotations.create(t.id, result=lss.choice(DIGIT(t.data)), completed_by=who, was_cancelled=False)
        _wait(lambda: _rounds(db) == [(0, "CLOSED"), (1, "COLLECTING")], "round 1 collecting", proc=proc, log=log)

        # 1. connect: registered through Label Studio's API, which checks it (health + setup) and
        # reports it connected, with the round's model version; a second connect finds it
        r = run_cli("labelstudio", "connect", "-p", str(pf), "--serve-url", serve_url, env=ML_ENV)
        assert r.returncode == 0, r.stdout + r.stderr
        url = f"{serve_url}/ml/mlb"
        assert f"ML backend {url} registered in Label Studio" in r.stdout and "connected" in r.stdout
        (backend,) = ls.ml.list(project=pid)
        assert backend.url == url and backend.state == "CO" and backend.auth_method == "BASIC_AUTH"
        assert backend.basic_auth_user == USER and backend.model_version == "mlb-round-1"
        r = run_cli("labelstudio", "connect", "-p", str(pf), "--serve-url", serve_url, env=ML_ENV)
        assert r.returncode == 0 and "already registered" in r.stdout, r.stdout + r.stderr
        assert [b.id for b in ls.ml.list(project=pid)] == [backend.id]
        # the webhook Label Studio made for the backend: annotation events only, with the credentials
        (hook,) = [h for h in ls.webhooks.list(project=str(pid)) if h.project == pid and h.url == url + "/webhook"]
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert hook.headers == {"Authorization": basic} and hook.send_for_all_actions is False
        # a wrong password: Label Studio cannot connect (401 from alloop)
        wrong = httpx.get(url + "/health", auth=(USER, "wrong"), timeout=30)
        assert wrong.status_code == 401

        # 2. "Retrieve Predictions" on every task: round 0's tasks (pushed before any model) get the
        # round-1 model's predictions from /predict; round 1's already hold them (pushed), so Label
        # Studio does not ask again
        tasks = lss.tasks(ls, pid)
        ls.actions.create(id="retrieve_tasks_predictions", project=pid, selected_items={"all": True})
        preds = [p for p in ls.predictions.list(project=pid) if p.model_version == "mlb-round-1"]
        by_task = {}
        for p in preds:
            by_task.setdefault(p.task, []).append(p)
        assert sorted(by_task) == sorted(t.id for t in tasks) and all(len(v) == 1 for v in by_task.values())
        key_of = {t.id: t.data["sample_id"] for t in tasks}
        expected = _expected(pf, list(key_of.values()), 1)
        for tid, (p,) in by_task.items():
            label, score = expected[key_of[tid]]
            assert p.result[0]["value"]["choices"] == [label] and abs(p.score - score) < 1e-5, (tid, p)
        round0 = [t.id for t in tasks if t.data["alloop_round"] == 0]
        assert all(by_task[t][0].score is not None for t in round0)

        # 3. 1,000 tasks in one "Retrieve Predictions" (one /predict call), well within Label Studio's limit
        engine = make_engine(db)
        with session_scope(engine) as s:
            keys = list(s.exec(select(Sample.key).where(Sample.split == "pool").order_by(Sample.id).limit(1000)))
        engine.dispose()
        assert len(keys) == 1000
        imported = ls.projects.import_tasks(pid, request=[{"data": {"image": "none", "sample_id": k}} for k in keys],
                                            return_task_ids=True)
        started = time.perf_counter()
        ls.actions.create(id="retrieve_tasks_predictions", project=pid,
                          selected_items={"all": False, "included": list(imported.task_ids)})
        through_ls = time.perf_counter() - started
        new = [p for p in ls.predictions.list(project=pid) if p.task in set(imported.task_ids)]
        assert len(new) == 1000 and {p.model_version for p in new} == {"mlb-round-1"}
        # the same call straight to alloop: Label Studio's payload shape, timed alone
        body = {"tasks": [{"id": tid, "data": {"image": "none", "sample_id": k}, "annotations": [], "predictions": [],
                           "project": pid} for tid, k in zip(imported.task_ids, keys)],
                "project": f"{pid}.0", "label_config": ls.projects.get(pid).label_config,
                "params": {"login": None, "password": None, "context": None}}
        started = time.perf_counter()
        direct = httpx.post(url + "/predict", json=body, auth=(USER, PASSWORD), timeout=LS_PREDICT_TIMEOUT_S)
        alone = time.perf_counter() - started
        assert direct.status_code == 200 and len(direct.json()["results"]) == 1000
        assert through_ls < LS_PREDICT_TIMEOUT_S and alone < LS_PREDICT_TIMEOUT_S
        served = [float(m) for m in re.findall(r"predicted 1000 of 1000 tasks with mlb-round-1 in ([\d.]+) s",
                                               log.read_text())]
        assert len(served) == 2  # Label Studio's call, then the direct one
        print(f"\n/predict of 1,000 tasks: {served[0]:.3f} s in alloop for Label Studio's call, {alone:.3f} s for a "
              f"direct call (HTTP included); 'Retrieve Predictions' through Label Studio (health, setup, predict, "
              f"storing 1,000 predictions): {through_ls:.2f} s")

        # 4. "Start Training" in Label Studio: with a new label since round 1's model, round 1 closes
        # early and round 2 trains and is pushed
        n_ann = _count(db, Annotation)
        t1 = next(t for t in tasks if t.data["alloop_round"] == 1)
        ls.annotations.create(t1.id, result=lss.choice(DIGIT(t1.data)), completed_by=who, was_cancelled=False)
        _wait(lambda: _count(db, Annotation) == n_ann + 1, "the round-1 label ingested", proc=proc, log=log)
        assert _rounds(db)[-1] == (1, "COLLECTING")  # 1 of 4 labeled, no retrain rule: it would wait
        ls.ml.train(backend.id)
        _wait(lambda: _rounds(db)[:3] == [(0, "CLOSED"), (1, "CLOSED"), (2, "COLLECTING")], "round 2 collecting",
              proc=proc, log=log)
        text = log.read_text()
        assert "project mlb round 1: COLLECTING -> CLOSED (early: training requested, 1 new labels)" in text
        assert "project mlb: training requested in Label Studio: round 1 closes at its next tick" in text
        # Label Studio's calls and its webhook all carried the credentials: the one refusal is the wrong password
        refused = [x for x in text.splitlines() if "refused" in x]
        assert len(refused) == 1 and "ML backend call GET /ml/mlb/health from 127.0.0.1 refused: wrong" in refused[0]
        assert _stop(proc) == 0
    finally:
        _kill(proc)
    # the password and webhook secret are in no file alloop wrote
    work = folder / ".alloop"
    for f in [*work.glob("alloop.db*"), pf, log]:
        data = f.read_bytes()
        assert PASSWORD.encode() not in data and SECRET.encode() not in data, f


def test_predict_on_a_detection_project_gives_the_rounds_boxes(tmp_path, pool_data):  # noqa: F811
    """The detection example (proposals from the round's own detector, an external training script):
    /predict answers each image with the newest round's boxes, in percent of the image."""
    from PIL import Image
    from starlette.testclient import TestClient

    from alloop.serve.mlbackend import Credentials, MLProject, ml_routes
    from alloop.serve.webhooks import create_app
    from connectors.label_studio.labeling_config import generate
    from connectors.label_studio.ml import LabelStudioFormat

    proj = make_project(tmp_path / "det", pool_data, loop={"initial_size": 12, "batch_size": 8, "max_rounds": 2})
    assert run_cli("import", "-p", str(proj), cwd=proj, timeout=240).returncode == 0
    r = run_cli("run", "-p", str(proj), cwd=proj, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    state = db(proj)
    assert [(n, s) for n, s, *_ in state["rounds"]] == [(0, "CLOSED"), (1, "CLOSED")]
    want: dict[str, list[tuple[Any, ...]]] = {}
    for key, label, score, x0, y0, x1, y1 in object_rows(proj, 1, state):  # round 1's own detections
        want.setdefault(key, []).append((label, score, x0, y0, x1, y1))
    ws = open_workspace(proj / "alloop.toml", do_import=False)
    try:
        project = ws.project()
        with session_scope(ws.engine) as s:
            paths = dict(s.exec(select(Sample.key, Sample.data)).all())
        client = TestClient(create_app({}, None, lambda: {}, ml_routes(
            {ws.name: MLProject(ws, LabelStudioFormat(), lambda why: None)}, Credentials(USER, PASSWORD))))
        keys = [*sorted(want)[:10], state["test"][0]]
        tasks = [{"id": i, "data": {"image": "x", "sample_id": k}} for i, k in enumerate(keys)]
        cfg = generate("detection", project.labels)
        res = client.post("/predict", json={"tasks": tasks, "project": "1.0", "label_config": cfg},
                          auth=(USER, PASSWORD))
        assert res.status_code == 200
        results = res.json()["results"]
        assert results[-1] == []  # a held-out image: the round scored the pool only
        for key, got in zip(keys[:-1], results[:-1]):
            (pred,) = got
            W, H = Image.open(paths[key]["path"]).size
            assert pred["model_version"] == f"{project.name}-round-1"
            assert pred["score"] == pytest.approx(float(np.mean([b[1] for b in want[key]])), abs=1e-6)
            boxes = sorted((b["value"]["rectanglelabels"][0], b["score"], b["value"]["x"] * W / 100,
                            b["value"]["y"] * H / 100, (b["value"]["x"] + b["value"]["width"]) * W / 100,
                            (b["value"]["y"] + b["value"]["height"]) * H / 100) for b in pred["result"])
            assert all(b["type"] == "rectanglelabels" and b["from_name"] == "label" for b in pred["result"])
            expected = sorted(want[key])
            assert [b[0] for b in boxes] == [b[0] for b in expected], key
            assert np.allclose([b[1:] for b in boxes], [b[1:] for b in expected], atol=1e-3), key
    finally:
        ws.close()
