"""The ML backend of ``alloop serve`` (Label Studio's protocol) through Starlette's TestClient against
the real app, on real projects (SQLite files): HTTP Basic auth, clear errors, /predict equal to the
round's model, and "Start Training" closing the collecting round through the real loop."""

from __future__ import annotations

import base64
import json
import logging

import numpy as np
import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from alloop.loop.controller import Controller
from alloop.protocols import ConnectorContext
from alloop.serve.mlbackend import Credentials, MLProject, credentials_from_env, ml_routes, model_version_name
from alloop.serve.webhooks import create_app
from alloop.store.arrays import arrays_of
from alloop.store.engine import session_scope
from alloop.store.models import Round, Sample, Task
from connectors.label_studio.connector import LabelStudioConnector
from connectors.label_studio.labeling_config import generate
from connectors.label_studio.ml import LabelStudioFormat
from tests.conftest import open_workspace, write_project

USER, PASSWORD = "labelstudio", "ml-backend-pw-" + "q" * 24
FMT = LabelStudioFormat()
UID = "12.1764700000"  # Label Studio's "<project id>.<created>"


def _auth(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _client(ws, woken: list[str], tool_project: str | None = "12") -> TestClient:
    source = LabelStudioConnector.from_params({}, context=ConnectorContext(project=ws.name))  # reads events only
    p = MLProject(ws, FMT, woken.append, source=source, tool_project=tool_project)
    return TestClient(create_app({}, None, lambda: {}, ml_routes({ws.name: p}, Credentials(USER, PASSWORD))))


def _config(ws) -> str:
    project = ws.project()
    return generate(project.task, project.labels)


@pytest.fixture
def jsonl_ws(tmp_path):
    ws = open_workspace(write_project(tmp_path / "p", connector={"name": "jsonl"},
                                      loop={"initial_size": 10, "batch_size": 5, "max_rounds": 4}))
    yield ws
    ws.close()


def test_credentials_come_from_the_environment_only():
    assert credentials_from_env({}) is None  # no password: no ML backend
    c = credentials_from_env({"ALLOOP_ML_BACKEND_PASSWORD": "pw"})
    assert c is not None and c.user == "alloop" and c.password == "pw"
    c = credentials_from_env({"ALLOOP_ML_BACKEND_PASSWORD": "pw", "ALLOOP_ML_BACKEND_USER": "ls"})
    assert c is not None and c.user == "ls" and "pw" not in repr(c)


def test_calls_without_the_right_basic_credentials_are_401_and_nothing_secret_is_logged(jsonl_ws, caplog):
    woken: list[str] = []
    client = _client(jsonl_ws, woken)
    caplog.set_level(logging.DEBUG)
    start = {"action": "START_TRAINING", "project": {"id": 12}}
    wrong = [({}, "missing"), (_auth(password="nope"), "wrong"), (_auth(user="admin"), "wrong"),
             (_auth(password=PASSWORD + "x"), "wrong"), (_auth(password=PASSWORD[:-1]), "wrong"),
             ({"Authorization": f"Bearer {PASSWORD}"}, "wrong"), ({"Authorization": "Basic %%%"}, "wrong")]
    for headers, word in wrong:
        for method, path in (("GET", "/ml/t/health"), ("POST", "/ml/t/setup"), ("POST", "/ml/t/predict"),
                             ("POST", "/ml/t/webhook"), ("POST", "/ml/t/train"), ("POST", "/webhook")):
            r = client.request(method, path, content=json.dumps(start), headers=headers)
            assert r.status_code == 401, (headers, path)
            assert r.headers["www-authenticate"].startswith("Basic")
            mine = [x for x in caplog.records if x.name == "alloop.serve.mlbackend"]
            assert f"{word} HTTP Basic credentials" in mine[-1].getMessage()
    assert woken == []  # refused before anything ran
    with session_scope(jsonl_ws.engine) as s:
        assert all(r.retrain_requested_at is None for r in s.exec(select(Round)))
    ok = client.get("/ml/t/health", headers=_auth())
    assert ok.status_code == 200 and ok.json()["status"] == "UP"
    secrets = [PASSWORD, "nope", base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()]
    assert not any(x in caplog.text for x in secrets)


def test_clear_errors_unknown_project_other_tool_project_label_config_mismatch(jsonl_ws):
    client = _client(jsonl_ws, [])
    cfg = _config(jsonl_ws)
    r = client.post("/ml/horses/setup", json={"project": UID, "schema": cfg}, headers=_auth())
    assert r.status_code == 404 and "'horses'" in r.json()["error"] and "['t']" in r.json()["error"]
    r = client.get("/ml/horses/health", headers=_auth())
    assert r.status_code == 404
    # the URL of project t, called by another Label Studio project
    r = client.post("/ml/t/setup", json={"project": "13.1764700000", "schema": cfg}, headers=_auth())
    assert r.status_code == 400
    assert "labels in Label Studio project 12; Label Studio project 13 called it" in r.json()["error"]
    # a labeling config whose labels differ from the project's: both named
    labels = jsonl_ws.project().labels
    bad = generate("classification", [*labels[1:], "zebra"])
    r = client.post("/ml/t/setup", json={"project": UID, "schema": bad}, headers=_auth())
    assert r.status_code == 400
    msg = r.json()["error"]
    assert f"missing labels '{labels[0]}'" in msg and "extra labels 'zebra'" in msg
    assert msg.startswith("the labeling config of Label Studio project 12 does not match the project's label set")
    r = client.post("/ml/t/setup", json={"project": UID}, headers=_auth())
    assert r.status_code == 400 and "labeling config" in r.json()["error"]
    assert client.post("/ml/t/predict", content=b"{oops", headers=_auth()).status_code == 400
    r = client.post("/ml/t/predict", json={"tasks": "all", "label_config": cfg}, headers=_auth())
    assert r.status_code == 400 and "tasks" in r.json()["error"]
    # all well: no model yet, so no model version and no predictions
    r = client.post("/ml/t/setup", json={"project": UID, "schema": cfg}, headers=_auth())
    assert r.status_code == 200 and r.json() == {"model_version": None}
    tasks = [{"id": 1, "data": {"sample_id": "0/x.png"}}, {"id": 2, "data": {}}]
    r = client.post("/ml/t/predict", json={"tasks": tasks, "project": UID, "label_config": cfg}, headers=_auth())
    assert r.status_code == 200 and r.json()["results"] == [[], []]


def test_predict_gives_the_rounds_model_output_for_scored_and_held_out_samples(tmp_path):
    ws = open_workspace(write_project(tmp_path / "p"))  # oracle connector: labels come back at once
    try:
        ctl = Controller(ws)
        ctl.run(rounds_to_close=1)
        while (r := ctl.tick()).state != "SCORED":  # round 1: created, trained, scored
            assert r.progressed
        client = _client(ws, [])
        cfg = _config(ws)
        r = client.post("/ml/t/setup", json={"project": UID, "schema": cfg}, headers=_auth())
        assert r.json() == {"model_version": "t-round-1"} == {"model_version": model_version_name("t", 1)}
        project = ws.project()
        with session_scope(ws.engine) as s:
            pool = s.exec(select(Sample.id, Sample.key).where(Sample.split == "pool").order_by(Sample.id)).all()
            test = s.exec(select(Sample.id, Sample.key).where(Sample.split == "test").order_by(Sample.id)).all()
            rnd1 = s.exec(select(Round).where(Round.number == 1)).one()
        picked = [*pool[::97], *test[::50]]
        tasks = [{"id": 100 + i, "data": {"sample_id": k}} for i, (_, k) in enumerate(picked)]
        tasks += [{"id": 1, "data": {"sample_id": "no/such.png"}}, {"id": 2, "data": {"image": "x"}}]
        # the bare path serves the only project
        r = client.post("/predict", json={"tasks": tasks, "project": UID, "label_config": cfg}, headers=_auth())
        assert r.status_code == 200
        results = r.json()["results"]
        assert len(results) == len(tasks) and results[-2:] == [[], []]
        # expected: the round's model on the samples' features, computed here (the controller's own model)
        model = ctl.env.models.of(rnd1)
        for split, rows in (("pool", pool[::97]), ("test", test[::50])):
            arrays = arrays_of(ws.engine, [i for i, _ in rows], split)
            _, X = ctl.env.data.features(project.id, arrays)
            P = model.predict_proba(X)
            for (_, key), p in zip(rows, P):
                (pred,) = results[[t["data"].get("sample_id") for t in tasks].index(key)]
                top = int(np.argmax(p))
                assert pred["model_version"] == "t-round-1"
                assert pred["score"] == pytest.approx(float(p[top]), abs=1e-5)
                assert pred["result"] == [{"from_name": "label", "to_name": "image", "type": "choices",
                                           "value": {"choices": [project.labels[top]]}, "score": pred["score"]}]
    finally:
        ws.close()


def test_start_training_closes_the_collecting_round_at_its_first_new_label(jsonl_ws):
    ws = jsonl_ws
    woken: list[str] = []
    client = _client(ws, woken)
    ctl = Controller(ws)
    assert ctl.run()[-1].waiting
    r = client.post("/ml/t/webhook", json={"action": "START_TRAINING", "project": {"id": 12}}, headers=_auth())
    assert r.status_code == 201 and r.json()["round"] == 0 and "closes at its next tick" in r.json()["training"]
    assert woken == ["training requested in Label Studio"]
    assert ctl.run()[-1].waiting  # no new label yet: the round keeps collecting, the request stays
    with session_scope(ws.engine) as s:
        keys = s.exec(select(Sample.key).join(Task, Task.sample_id == Sample.id).order_by(Task.id)).all()
        assert s.exec(select(Round)).one().retrain_requested_at is not None
    truth = ws.reference_labels(keys[:1])
    with open(ws.work_dir / "handoff" / "labels.jsonl", "a") as fh:
        fh.write(json.dumps({"key": keys[0], "label": truth[keys[0]], "annotator": "ana"}) + "\n")
    results = ctl.run()
    closed = [x for x in results if x.action == "closed"]
    assert closed and "closed early: training requested, 1 new labels" in closed[0].message
    with session_scope(ws.engine) as s:
        rounds = s.exec(select(Round).order_by(Round.number)).all()
    assert [(x.number, x.state) for x in rounds] == [(0, "CLOSED"), (1, "COLLECTING")]
    assert rounds[1].retrain_requested_at is None  # the request was round 0's
    # /train (servers that route "Start Training" there) records the same request
    r = client.post("/ml/t/train", json={"project": UID, "annotations": []}, headers=_auth())
    assert r.status_code == 201 and r.json()["round"] == 1 and len(woken) == 2
    # an annotation event wakes the loop as the webhook does; other events do not
    ev = {"action": "ANNOTATION_CREATED", "project": {"id": 12}, "annotation": {"id": 1}}
    assert client.post("/ml/t/webhook", json=ev, headers=_auth()).status_code == 202 and len(woken) == 3
    assert client.post("/ml/t/webhook", json={"action": "TASKS_CREATED"}, headers=_auth()).status_code == 200
    assert woken[-1] == "webhook ANNOTATION_CREATED" and len(woken) == 3
