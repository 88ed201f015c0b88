"""The webhook receiver and /healthz, through Starlette's TestClient against the real app; and a
real project runner woken by it (jsonl connector, SQLite file)."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from sqlmodel import select
from starlette.requests import Request
from starlette.testclient import TestClient

from alloop.errors import LockedError
from alloop.loop.lock import ProjectLease
from alloop.protocols import ConnectorContext, WebhookSource
from alloop.report import project_status
from alloop.serve.service import ProjectRunner, webhook_url
from alloop.serve.webhooks import Target, client_host, create_app, webhook_path
from alloop.store.engine import session_scope
from alloop.store.models import Project
from connectors.label_studio.connector import LabelStudioConnector
from tests.conftest import open_workspace, write_project
from tests.integration.snapshot import snapshot

SECRET = "s3cret-" + "x" * 30
WEBHOOK_PATH = webhook_path("label_studio")
EVENT = {"action": "ANNOTATION_CREATED", "annotation": {"id": 7, "task": 3, "project": 12},
         "project": {"id": 12, "title": "alloop: cats"}, "task": {"id": 3, "data": {"sample_id": "a.png"}}}


def _events() -> WebhookSource:
    """The Label Studio connector reads the events (it reaches no server for that)."""
    conn = LabelStudioConnector.from_params({}, context=ConnectorContext(project="p"))
    assert isinstance(conn, WebhookSource)
    return conn


@pytest.fixture
def app():
    woken: dict[str, list[str]] = {"cats": [], "dogs": []}
    events = {"cats": threading.Event(), "dogs": threading.Event()}

    def waker(name):
        def wake(why):
            woken[name].append(why)
            events[name].set()
        return wake

    targets = {"cats": Target("cats", waker("cats"), _events(), "label_studio", tool_project="12"),
               "dogs": Target("dogs", waker("dogs"), _events(), "label_studio")}
    health = {"status": "ok", "projects": {"cats": {"state": "COLLECTING", "round": 1}}}
    client = TestClient(create_app(targets, SECRET, lambda: health))
    return client, woken, events


def _post(client, body, secret=SECRET, project="cats"):
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Alloop-Secret"] = secret
    url = WEBHOOK_PATH + (f"?project={project}" if project else "")
    return client.post(url, content=body if isinstance(body, (str, bytes)) else json.dumps(body), headers=headers)


def test_missing_or_wrong_secret_is_refused_and_logged_without_the_secret(app, caplog):
    client, woken, events = app
    caplog.set_level(logging.WARNING, logger="alloop.serve.webhooks")
    for secret, word in ((None, "missing"), ("nope", "wrong"), (SECRET[:-1], "wrong"), (SECRET + "x", "wrong"),
                         ("", "wrong")):
        r = _post(client, EVENT, secret=secret)
        assert r.status_code == 401, secret
        assert f"{word} X-Alloop-Secret header" in caplog.records[-1].getMessage()
    assert not any(events[n].is_set() for n in events) and woken == {"cats": [], "dogs": []}
    assert all(SECRET not in rec.getMessage() and "nope" not in rec.getMessage() for rec in caplog.records)


def test_malformed_bodies_are_400_unknown_projects_404(app, caplog):
    client, woken, _ = app
    caplog.set_level(logging.WARNING, logger="alloop.serve.webhooks")
    assert _post(client, "{not json").status_code == 400
    assert "not JSON" in caplog.records[-1].getMessage()
    assert _post(client, b"\xff\xfe").status_code == 400
    assert _post(client, [1, 2]).status_code == 400
    assert _post(client, {"annotation": {}}).status_code == 400  # no action
    r = _post(client, EVENT, project="horses")
    assert r.status_code == 404 and r.json()["serving"] == ["cats", "dogs"]
    assert "does not drive" in caplog.records[-1].getMessage()
    other = {**EVENT, "project": {"id": 99}}
    assert _post(client, other, project=None).status_code == 404  # a Label Studio project nobody serves
    assert woken == {"cats": [], "dogs": []}


def test_a_good_event_wakes_its_project_and_repeats_are_harmless(app):
    client, woken, events = app
    r = _post(client, EVENT)
    assert r.status_code == 202 and r.json() == {"project": "cats", "action": "ANNOTATION_CREATED", "woken": True}
    assert events["cats"].is_set() and not events["dogs"].is_set()
    assert _post(client, EVENT).status_code == 202  # the same event again: one more wake, nothing else
    # no project parameter: found by the Label Studio project id of the payload
    deleted = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 7}], "project": {"id": 12}}
    assert _post(client, deleted, project=None).status_code == 202
    assert woken["cats"] == ["webhook ANNOTATION_CREATED"] * 2 + ["webhook ANNOTATIONS_DELETED"]
    # other events are acknowledged and wake nothing
    r = _post(client, {"action": "TASKS_CREATED", "tasks": [], "project": {"id": 12}})
    assert r.status_code == 200 and r.json()["woken"] is False and len(woken["cats"]) == 3
    assert _post(client, EVENT, project="dogs").status_code == 202 and woken["dogs"] == ["webhook ANNOTATION_CREATED"]


def test_healthz_and_webhooks_off():
    health = {"status": "ok", "projects": {"p": {"state": "COLLECTING", "round": 0, "next_run_at": None,
                                                 "last_tick_at": None, "last_error": None}}}
    client = TestClient(create_app({}, None, lambda: health))
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == health
    assert client.post(WEBHOOK_PATH, content=json.dumps(EVENT), headers={"X-Alloop-Secret": SECRET}).status_code == 404


def test_webhook_url_names_the_project_and_the_tool():
    assert webhook_url("http://alloop:8765/", "my.proj", "label_studio") == \
        "http://alloop:8765/webhooks/label-studio?project=my.proj"


def test_a_tool_without_webhooks_is_not_served(app):
    client, woken, _ = app
    r = client.post("/webhooks/jsonl?project=cats", content=json.dumps(EVENT), headers={"X-Alloop-Secret": SECRET})
    assert r.status_code == 404 and woken == {"cats": [], "dogs": []}


# --- a real runner: woken by the app, ticking a real project --------------------------------------

def _jsonl_project(tmp_path, **serve):
    pf = write_project(tmp_path / "p", connector={"name": "jsonl"}, serve=serve or {"interval_s": 60},
                       loop={"initial_size": 6, "batch_size": 3, "max_rounds": 3})
    return open_workspace(pf)


def test_runner_woken_by_webhooks_ticks_and_repeated_events_change_nothing(tmp_path):
    ws = _jsonl_project(tmp_path)
    stop = threading.Event()
    runner = ProjectRunner(ws, stop, "host:1")
    client = TestClient(create_app({ws.name: Target(ws.name, runner.wake, _events(), "label_studio")}, SECRET,
                                   lambda: {}))
    assert _post(client, EVENT, project=ws.name).status_code == 202
    results = runner.run_once("webhook ANNOTATION_CREATED")
    assert results[-1].waiting and runner.status.state == "COLLECTING" and runner.status.round == 0
    before = snapshot(str(ws.engine.url))
    for _ in range(3):  # the same event delivered again and again
        assert _post(client, EVENT, project=ws.name).status_code == 202
        assert not any(r.progressed for r in runner.run_once("webhook ANNOTATION_CREATED"))
    assert snapshot(str(ws.engine.url)) == before
    assert runner.status.last_error is None and runner.status.last_tick_at is not None
    ws.close()


def test_runner_skips_a_project_another_process_advances(tmp_path, caplog):
    ws = _jsonl_project(tmp_path)
    project = ws.project()
    other = ProjectLease(ws.engine, project.id, project.name)
    other.acquire()
    caplog.set_level(logging.INFO, logger="alloop.serve.service")
    runner = ProjectRunner(ws, threading.Event(), "host:1")
    try:
        assert runner.run_once("schedule") == []
    finally:
        other.release()
    assert "another process holds the lease" in caplog.text and runner.status.last_error is None
    with pytest.raises(LockedError):  # what `alloop run` would have said
        other.acquire()
        try:
            runner.ctl.tick()
        finally:
            other.release()
    assert runner.run_once("schedule")[-1].waiting  # free again: it runs
    ws.close()


def test_the_next_scheduled_action_is_written_for_alloop_status(tmp_path):
    from apscheduler.schedulers.background import BackgroundScheduler

    from alloop.serve.schedule import make_trigger

    ws = _jsonl_project(tmp_path, interval_s=120)
    runner = ProjectRunner(ws, threading.Event(), "box:42")
    sched = BackgroundScheduler(timezone="UTC")
    runner.job = sched.add_job(runner.wake, make_trigger(ws.config.serve), args=["schedule"], id=ws.name)
    sched.start()
    try:
        runner.refresh()
        status = project_status(ws.engine, ws.name)
        assert status["next_action"]["what"] == "tick (every 120 s) by box:42"
        assert status["next_action"]["at"] == runner.job.next_run_time.isoformat()
        assert runner.status.next_run_at == runner.job.next_run_time and runner.status.state == "new"
        runner.forget_next_action()
        assert project_status(ws.engine, ws.name)["next_action"] is None
        # another process's next action is left alone
        runner.refresh()
        with session_scope(ws.engine) as s:
            row = s.exec(select(Project)).one()
            row.next_action = "tick (every 60 s) by other:7"
            s.add(row)
        runner.forget_next_action()
        assert project_status(ws.engine, ws.name)["next_action"]["what"] == "tick (every 60 s) by other:7"
    finally:
        sched.shutdown(wait=False)
        ws.close()


def test_client_host_names_the_caller_or_a_question_mark():
    """What the refusal log lines of the receiver, the ML backend and the status page name."""
    assert client_host(Request({"type": "http", "client": ("10.1.2.3", 5123)})) == "10.1.2.3"
    assert client_host(Request({"type": "http", "client": None})) == "?"
