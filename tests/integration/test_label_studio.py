"""The Label Studio connector against a real Label Studio server (started once per session)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import select

from alloop.errors import ConfigError, ConnectorAuthError, ConnectorUnavailableError
from alloop.loop.controller import Controller
from alloop.report import project_status
from alloop.store.engine import session_scope
from alloop.store.models import Annotation, Task
from tests.conftest import open_workspace, run_cli, write_project
from tests.integration import ls_support as lss
from tests.integration.snapshot import assert_no_duplicates, snapshot

DIGIT = lambda data: data["sample_id"].split("/")[0]  # noqa: E731 - the truth is the class folder


def _ls_project(label_studio, name: str, **sections):
    folder = Path(label_studio.document_root) / name
    sections.setdefault("connector", {"name": "label_studio"})
    sections.setdefault("loop", {"initial_size": 12, "batch_size": 6, "max_rounds": 3})
    sections.setdefault("project", {"name": name, "seed": 0})
    pf = write_project(folder, **sections)
    return pf, folder


def _run_until_waiting(ws) -> list:
    return Controller(ws).run()


def test_image_classification_multi_round_with_two_annotators(label_studio):
    pf, _ = _ls_project(label_studio, "img")
    ws = open_workspace(pf)
    ls = lss.client()
    who = lss.users(ls, ["ana", "bob"])
    results = _run_until_waiting(ws)
    assert results[-1].waiting and "0/12" in results[-1].message
    pid = lss.project_id(ls, "alloop: img")
    for round_no in range(3):
        n = lss.label_all(ls, pid, DIGIT, list(who.values()))
        assert n == 2 * (12 if round_no == 0 else 6)
        results = _run_until_waiting(ws)
    assert results[-1].finished
    snap = snapshot(str(ws.engine.url))
    assert_no_duplicates(snap)
    ls_tasks = lss.tasks(ls, pid)
    assert len(ls_tasks) == len(snap["tasks"]) == 24  # exactly one task per selected sample
    assert {t.data["sample_id"] for t in ls_tasks} == {k for _, k, _ in snap["tasks"]}
    assert {str(t.id) for t in ls_tasks} == {ext for *_, ext in snap["tasks"]}
    assert len(snap["annotations"]) == 48 and all(a[5] for a in snap["annotations"])
    assert {a[2] for a in snap["annotations"]} == {"ana@alloop.local", "bob@alloop.local"}
    # rounds 1 and 2 carried the model's pre-annotations, with the round's model version
    later = [t for t in ls_tasks if t.data["alloop_round"] > 0]
    assert later and all(t.predictions for t in later)
    versions = {p["model_version"] if isinstance(p, dict) else p.model_version for t in later for p in t.predictions}
    assert versions == {"img-round-1", "img-round-2"}
    assert ls.projects.get(pid).model_version == "img-round-2"
    # images are served to the browser through local-files storage
    import httpx

    img = ls_tasks[0].data["image"]
    token = label_studio.credentials()["LABEL_STUDIO_API_KEY"]
    r = httpx.get(label_studio.url + img, headers={"Authorization": f"Token {token}"})
    assert img.startswith("/data/local-files/?d=img/") and r.status_code == 200 and r.content[:4] == b"\x89PNG"
    ws.close()


def _texts(path: Path, n: int = 40) -> Path:
    good = ["a warm, funny and moving film", "brilliant acting and a smart script", "i loved every minute of it",
            "a beautiful, generous story", "great fun for the whole family"]
    bad = ["a dull, lifeless mess", "the plot makes no sense at all", "i was bored from start to finish",
           "clumsy dialogue and flat characters", "a waste of two hours"]
    rows = [{"id": f"r{i}", "text": f"{(good if i % 2 else bad)[i % 5]} ({i})", "label": "pos" if i % 2 else "neg"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_text_classification_rounds(label_studio, tmp_path):
    texts = _texts(tmp_path / "reviews.jsonl")
    pf, _ = _ls_project(label_studio, "txt", project={"name": "txt", "task": "text"},
                        pool={"source": {"type": "texts", "path": str(texts)}, "test_fraction": 0.25},
                        features={"name": "hashing"}, loop={"initial_size": 8, "batch_size": 4, "max_rounds": 2})
    ws = open_workspace(pf)
    ls = lss.client()
    who = lss.users(ls, ["carl"])
    truth = {s: lb for s, lb in ((json.loads(x)["id"], json.loads(x)["label"]) for x in texts.read_text().splitlines())}
    _run_until_waiting(ws)
    pid = lss.project_id(ls, "alloop: txt")
    assert "<Text" in ls.projects.get(pid).label_config
    for _ in range(2):
        lss.label_all(ls, pid, lambda d: truth[d["sample_id"]], list(who.values()), to_name="text")
        results = _run_until_waiting(ws)
    assert results[-1].finished
    status = project_status(ws.engine, ws.name)
    assert [r["labeled"] for r in status["rounds"]] == [8, 4]
    assert status["final_model"]["n_labels"] == 12
    ws.close()


def test_detection_round_with_proposals_as_preannotations_and_boxes_back(label_studio, tmp_path):
    from alloop.datasets.detection import make_detection_pool
    from alloop.datasets.noisy_autolabels import write_autolabels_from_truth
    from alloop.detection.autolabels import read_autolabels
    from alloop.export import export_labels

    root = Path(label_studio.document_root) / "det-pool"
    pool = make_detection_pool(root, n_images=10, class_names=["0", "1", "7"], seed=3, overwrite=True)
    auto = write_autolabels_from_truth(pool.path, root / "autolabels.jsonl", seed=3, false_positive_rate=0.0)
    pf, _ = _ls_project(label_studio, "det",
                        project={"name": "det", "task": "detection", "labels": ["0", "1", "7", "blot"]},
                        loop={"initial_size": 3, "batch_size": 3, "max_rounds": 1},
                        pool={"source": {"type": "folder", "path": str(pool.images_dir),
                                         "annotations": str(pool.path)}},
                        proposals={"source": "file", "path": str(auto.path)},
                        cold_start={"name": "ofds"})
    ws = open_workspace(pf)
    _run_until_waiting(ws)
    ls = lss.client()
    pid = lss.project_id(ls, "alloop: det")
    assert "<RectangleLabels" in ls.projects.get(pid).label_config
    props = read_autolabels(auto.path, labels=["0", "1", "7"])
    t1, t2, t3 = lss.tasks(ls, pid)
    # every task carries the image's proposals as rectangles, in percent of the 128x128 canvas
    for t in (t1, t2, t3):
        mine = props.of_image(t.data["sample_id"])
        pred = t.predictions[0]
        result = pred["result"] if isinstance(pred, dict) else pred.result
        assert len(result) == len(mine) > 0 and {r["type"] for r in result} == {"rectanglelabels"}
        got = sorted((r["value"]["rectanglelabels"][0], *(r["value"][k] * 1.28 for k in ("x", "y", "width", "height")))
                     for r in result)
        want = sorted((lb, *map(float, b)) for b, lb in zip(mine.box, mine.label.tolist()))
        assert [g[0] for g in got] == [w[0] for w in want]
        np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want], atol=0.01)
    uid = lss.users(ls, ["dora"])["dora"]

    def accept(task, extra=()):  # the annotator keeps the proposals (as Label Studio submits them) and adds boxes
        pred = task.predictions[0]
        size = {"original_width": 128, "original_height": 128}
        result = [{k: r[k] for k in ("from_name", "to_name", "type", "value")} | size
                  for r in (pred["result"] if isinstance(pred, dict) else pred.result)]
        return result + list(extra)

    box = lambda lb, x: {"from_name": "label", "to_name": "image", "type": "rectanglelabels",  # noqa: E731
                         "original_width": 128, "original_height": 128, "image_rotation": 0,
                         "value": {"x": x, "y": 10, "width": 25, "height": 50, "rotation": 0, "rectanglelabels": [lb]}}
    lss.annotate(ls, [(t1.id, accept(t1, [box("blot", 50)]), uid, False), (t2.id, [], uid, False),
                      (t3.id, accept(t3, [box("scratch", 5)]), uid, False)])
    results = _run_until_waiting(ws)
    assert results[-1].finished
    with session_scope(ws.engine) as s:
        rows = {a.task_id: a for a in s.exec(select(Annotation))}
        tasks = {t.external_id: t.id for t in s.exec(select(Task))}
    a1, a2, a3 = rows[tasks[str(t1.id)]], rows[tasks[str(t2.id)]], rows[tasks[str(t3.id)]]
    n1 = len(props.of_image(t1.data["sample_id"]))
    assert len(a1.value["boxes"]) == n1 + 1 and a1.value["boxes"][-1] == {
        "x": 50, "y": 10, "width": 25, "height": 50, "rotation": 0, "label": "blot"} and a1.valid
    assert a2.value == {"boxes": []} and a2.valid  # nothing on the image: valid, empty
    assert not a3.valid and "scratch" in a3.invalid_reason
    # the COCO export holds the accepted proposals and the added box, in pixels
    counts = export_labels(ws, tmp_path / "labels.json")
    doc = json.loads((tmp_path / "labels.json").read_text())
    assert counts == {"samples": 2, "boxes": n1 + 1}
    img1 = next(i for i in doc["images"] if i["alloop_key"] == t1.data["sample_id"])
    boxes1 = sorted(a["bbox"] for a in doc["annotations"] if a["image_id"] == img1["id"])
    want = sorted([[float(v) for v in b] for b in props.of_image(t1.data["sample_id"]).box]
                  + [[64.0, 12.8, 32.0, 64.0]])
    np.testing.assert_allclose(boxes1, want, atol=0.02)
    ws.close()


def test_unknown_label_updated_and_cancelled_annotations(label_studio):
    pf, _ = _ls_project(label_studio, "edge", loop={"initial_size": 4, "batch_size": 2, "max_rounds": 2})
    ws = open_workspace(pf)
    _run_until_waiting(ws)
    ls = lss.client()
    pid = lss.project_id(ls, "alloop: edge")
    uid = lss.users(ls, ["eve"])["eve"]
    t = lss.tasks(ls, pid)
    made = lss.annotate(ls, [(t[0].id, lss.choice("unicorn"), uid, False), (t[1].id, lss.choice("3"), uid, False),
                             (t[2].id, [], uid, True), (t[3].id, lss.choice(DIGIT(t[3].data)), uid, False)])
    results = _run_until_waiting(ws)
    # every task resolved (a label, an invalid label or a skip): round 0 closes, round 1 is pushed
    assert [(r.action, r.round) for r in results][:2] == [("closed", 0), ("created", 1)]
    assert results[-1].waiting and results[-1].round == 1
    with session_scope(ws.engine) as s:
        anns = {a.source_id: a for a in s.exec(select(Annotation))}
    bad, edited, skipped = anns[str(made[0].id)], anns[str(made[1].id)], anns[str(made[2].id)]
    assert not bad.valid and "'unicorn' is not in the label set" in bad.invalid_reason
    assert skipped.cancelled and skipped.label is None
    assert edited.label == "3"
    assert project_status(ws.engine, ws.name)["invalid_annotations"] == 1
    # the annotator corrects the label in Label Studio: the same annotation is updated, not duplicated
    truth = DIGIT(t[1].data)
    ls.annotations.update(made[1].id, result=lss.choice(truth))
    assert Controller(ws).tick().action == "waiting"  # pulls again while round 1 collects
    with session_scope(ws.engine) as s:
        again = s.exec(select(Annotation).where(Annotation.source_id == str(made[1].id))).all()
        n_all = len(s.exec(select(Annotation)).all())
        labels = {a.label for a in s.exec(
            select(Annotation).where(Annotation.valid == True, Annotation.cancelled == False)  # noqa: E712
        )}
    assert len(again) == 1 and again[0].label == truth and n_all == 4
    assert "unicorn" not in labels
    ws.close()


def test_label_config_mismatch_names_missing_and_extra(label_studio, tmp_path):
    xml = tmp_path / "config.xml"
    xml.write_text('<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
                   + "".join(f'<Choice value="{d}"/>' for d in ["0", "1", "2", "3", "4", "5", "6", "7", "8", "x"])
                   + "</Choices></View>")
    pf, _ = _ls_project(label_studio, "mismatch",
                        connector={"name": "label_studio", "params": {"label_config": str(xml)}})
    ws = open_workspace(pf)
    with pytest.raises(ConfigError) as e:
        Controller(ws).run()
    assert "missing labels '9'" in str(e.value) and "extra labels 'x'" in str(e.value)
    ws.close()
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 2 and "missing labels '9'" in r.stderr


def test_wrong_or_missing_token_names_the_variable(label_studio):
    pf, _ = _ls_project(label_studio, "tok")
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("run", "-p", str(pf), env={"LABEL_STUDIO_API_KEY": "not-a-valid-token"})
    assert r.returncode == 2
    assert "refused the token (401)" in r.stderr and "LABEL_STUDIO_API_KEY" in r.stderr
    assert "not-a-valid-token" not in r.stderr + r.stdout
    env = {"LABEL_STUDIO_API_KEY": ""}
    r = run_cli("run", "-p", str(pf), env=env)
    assert r.returncode == 2 and "set the environment variable LABEL_STUDIO_API_KEY" in r.stderr


def test_token_is_never_logged_or_stored(label_studio):
    pf, folder = _ls_project(label_studio, "secret")
    token = label_studio.credentials()["LABEL_STUDIO_API_KEY"]
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("--debug", "run", "-p", str(pf))
    assert r.returncode == 0, r.stderr
    assert token not in r.stdout + r.stderr
    for f in folder.rglob("*"):
        if f.is_file() and f.suffix not in (".png",):
            assert token.encode() not in f.read_bytes(), f


def test_sigkill_between_import_and_commit_creates_no_duplicates(label_studio):
    pf, folder = _ls_project(label_studio, "crash")
    assert run_cli("import", "-p", str(pf)).returncode == 0
    ls = lss.client()
    r = run_cli("run", "-p", str(pf), env={"ALLOOP_TEST_KILL_AT": "0:after_push"})
    assert r.returncode == -signal.SIGKILL
    pid = lss.project_id(ls, "alloop: crash")
    assert len(lss.tasks(ls, pid, "task_only")) == 12  # in Label Studio, not yet in alloop's database
    db = f"sqlite:///{folder / '.alloop' / 'alloop.db'}"
    assert snapshot(db)["tasks"] == []
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 0, r.stderr
    assert "adopted 12 already there" in r.stdout
    who = lss.users(ls, ["finn"])
    lss.label_all(ls, pid, DIGIT, list(who.values()))
    r = run_cli("run", "-p", str(pf), env={"ALLOOP_TEST_KILL_AT": "1:after_push"})
    assert r.returncode == -signal.SIGKILL
    r = run_cli("run", "-p", str(pf))
    assert "adopted 6 already there" in r.stdout
    ls_tasks = lss.tasks(ls, pid, "task_only")
    snap = snapshot(db)
    assert_no_duplicates(snap)
    assert len(ls_tasks) == len({t.data["sample_id"] for t in ls_tasks}) == len(snap["tasks"]) == 18
    assert len(snap["annotations"]) == 12  # none lost, none doubled


def test_label_studio_down_mid_round_then_back(label_studio):
    pf, _ = _ls_project(label_studio, "down", loop={"initial_size": 4, "batch_size": 2, "max_rounds": 2},
                        connector={"name": "label_studio", "params": {"retries": 2, "backoff_s": 0.2}})
    ws = open_workspace(pf)
    _run_until_waiting(ws)
    ls = lss.client()
    pid = lss.project_id(ls, "alloop: down")
    uid = lss.users(ls, ["gus"])["gus"]
    lss.label_all(ls, pid, DIGIT, [uid])
    label_studio.stop()
    try:
        with pytest.raises(ConnectorUnavailableError, match="unavailable .* after 3 attempts.*Nothing was lost"):
            Controller(ws).run()
        status = project_status(ws.engine, ws.name)
        assert status["rounds"][0]["state"] == "COLLECTING"
        assert "ConnectorUnavailableError" in status["rounds"][0]["last_error"]
        assert status["rounds"][0]["attempt"] == 0  # waiting for a server is not a failed attempt
    finally:
        label_studio.start()
    results = _run_until_waiting(ws)
    assert results[-1].waiting and results[-1].round == 1
    lss.label_all(ls, pid, DIGIT, [uid])
    assert _run_until_waiting(ws)[-1].finished
    assert_no_duplicates(snapshot(str(ws.engine.url)))
    ws.close()


def test_auth_error_class_in_library(label_studio, monkeypatch):
    pf, _ = _ls_project(label_studio, "auth2")
    ws = open_workspace(pf)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "wrong")
    with pytest.raises(ConnectorAuthError):
        Controller(ws).run()
    ws.close()


def _seed_data_dir(label_studio, target: Path) -> None:
    """A migrated copy of the session server's data folder (saves the minute of migrations)."""
    import shutil
    import sqlite3

    target.mkdir(parents=True)
    src = sqlite3.connect(label_studio.data_dir / "label_studio.sqlite3")
    dst = sqlite3.connect(target / "label_studio.sqlite3")
    src.backup(dst)
    src.close()
    dst.close()
    for name in (".env", "credentials.env"):
        if (label_studio.data_dir / name).exists():
            shutil.copy(label_studio.data_dir / name, target / name)


def test_newcomer_path_up_label_run_stop(label_studio, tmp_path):
    """The README's Label Studio section, as commands."""
    from tests.conftest import _free_port

    proj = tmp_path / "lsdemo"
    port = _free_port(18300)
    r = run_cli("init", str(proj), "--dataset", "digits", "--connector", "label_studio", "--rounds", "3",
                "--batch-size", "5")
    assert r.returncode == 0, r.stderr
    _seed_data_dir(label_studio, proj / ".alloop" / "label-studio")
    clean = {"LABEL_STUDIO_URL": "", "LABEL_STUDIO_API_KEY": "", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": "",
             "ALLOOP_LS_VENV": str(label_studio.venv)}
    try:
        r = run_cli("labelstudio", "up", "-p", str(proj), "--port", str(port), env=clean)
        assert r.returncode == 0, r.stderr + r.stdout
        creds_file = proj / ".alloop" / "label-studio" / "credentials.env"
        assert f"http://127.0.0.1:{port}" in r.stdout and "admin@alloop.local" in r.stdout
        assert f"source {creds_file}" in r.stdout
        creds = dict(line[len("export "):].split("=", 1) for line in creds_file.read_text().splitlines())
        creds = {k: v.strip("'") for k, v in creds.items()}
        assert creds["LABEL_STUDIO_API_KEY"] not in r.stdout and creds["ALLOOP_LS_ADMIN_PASSWORD"] not in r.stdout
        assert oct(creds_file.stat().st_mode & 0o777) == "0o600"
        from label_studio_sdk import LabelStudio

        ls = LabelStudio(base_url=creds["LABEL_STUDIO_URL"], api_key=creds["LABEL_STUDIO_API_KEY"])
        pid = lss.project_id(ls, "alloop: lsdemo")
        assert len(lss.tasks(ls, pid)) == 20
        lss.label_all(ls, pid, DIGIT, [ls.users.whoami().id])
        r = run_cli("run", "-p", str(proj), env=creds)  # = `source credentials.env && alloop run`
        assert r.returncode == 0, r.stderr
        assert "round 0: closed" in r.stdout and "round 1: pushed 5 tasks" in r.stdout
        assert len(lss.tasks(ls, pid)) == 25
    finally:
        r = run_cli("labelstudio", "stop", "-p", str(proj), "--port", str(port), env=clean)
    assert "Label Studio stopped." in r.stdout
    from connectors.label_studio.server import port_is_free

    assert port_is_free(port)


@pytest.fixture
def proxy(label_studio):
    from tests.integration.flaky_proxy import FlakyProxy

    p = FlakyProxy(label_studio.url)
    yield p
    p.close()


def test_5xx_is_retried_and_a_lost_import_answer_duplicates_nothing(label_studio, proxy):
    params = {"url": proxy.url, "retries": 4, "backoff_s": 0.1}
    pf, _ = _ls_project(label_studio, "flaky", connector={"name": "label_studio", "params": params},
                        loop={"initial_size": 6, "batch_size": 3, "max_rounds": 2})
    ws = open_workspace(pf)
    ctl = Controller(ws)
    for _ in range(4):
        ctl.tick()  # created, trained, scored, selected
    assert proxy.seen == []  # no call to Label Studio yet
    proxy.fail_next, proxy.status = 2, 502  # the first calls (finding the project) fail, then work
    ws.connector.ensure_project()
    assert [s for *_, s in proxy.seen[:3]] == [502, 502, 200]
    proxy.fail_after_forward, proxy.status, proxy.only = 1, 500, "/import"  # applied, but the answer is lost
    before = len(proxy.seen)
    r = ctl.tick()
    assert r.action == "pushed", r
    imports = [(m, p, st) for m, p, st in proxy.seen[before:] if m == "POST" and "/import" in p]
    assert [st for *_, st in imports] == [500]  # not imported a second time: the tasks were adopted
    ls = lss.client()
    pid = lss.project_id(ls, "alloop: flaky")
    ls_tasks = lss.tasks(ls, pid, "task_only")
    assert len(ls_tasks) == 6 and len({t.data["sample_id"] for t in ls_tasks}) == 6
    assert len(snapshot(str(ws.engine.url))["tasks"]) == 6
    ws.close()


def test_slow_server_times_out_then_the_round_continues(label_studio, proxy):
    params = {"url": proxy.url, "retries": 1, "backoff_s": 0.1, "timeout_s": 0.5}
    sections = dict(loop={"initial_size": 4, "batch_size": 2, "max_rounds": 1})
    pf, _ = _ls_project(label_studio, "slow", connector={"name": "label_studio", "params": params}, **sections)
    ws = open_workspace(pf)
    proxy.stall = True  # no answer at all: the 0.5 s time-out fires whatever the machine's load
    with pytest.raises(ConnectorUnavailableError, match="ReadTimeout"):
        Controller(ws).run()
    ws.close()
    proxy.stall = False
    proxy.release.set()
    # the server answers again; the next run (time-out back at the default, so the real server's own
    # speed does not matter) continues the round from where it stopped
    pf, _ = _ls_project(label_studio, "slow", connector={"name": "label_studio", "params": {"url": proxy.url}},
                        **sections)
    ws = open_workspace(pf, do_import=False)
    results = Controller(ws).run()
    assert results[-1].waiting and "0/4" in results[-1].message
    ws.close()
