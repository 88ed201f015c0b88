"""``alloop serve`` as a real subprocess: Label Studio webhooks against the real server, the
schedule, /healthz, ``alloop status``, SIGTERM in the middle of a transition, and two serve
processes sharing one PostgreSQL database."""

from __future__ import annotations

import heapq
import json
import os
import re
import signal
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import select

from alloop.config import load_config
from alloop.loop.ingest import DELETED
from alloop.loop.states import RoundState
from alloop.serve.service import register_webhook
from alloop.store.engine import make_engine, session_scope
from alloop.store.models import Annotation, ModelVersion, Project, Round, Sample, Task
from tests.conftest import ALLOOP, open_workspace, run_cli, write_project
from tests.helpers.waiting import SAFETY_NET_S, wait_until
from tests.integration import ls_support as lss
from tests.integration.snapshot import assert_no_duplicates, snapshot

SECRET = "serve-test-secret-0123456789abcdef"
LEGAL = {s.value for s in RoundState}
DIGIT = lambda data: data["sample_id"].split("/")[0]  # noqa: E731 - the truth is the class folder


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(projects: list[Path], port: int, log: Path, **env: str) -> subprocess.Popen:
    args = [ALLOOP, "serve", "--port", str(port)]
    for p in projects:
        args += ["-p", str(p)]
    full = {**os.environ, "ALLOOP_DISABLE_PROGRESS_BARS": "1", "ALLOOP_WEBHOOK_SECRET": SECRET, **env}
    with open(log, "ab") as fh:
        return subprocess.Popen(args, env=full, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait(
    cond: Callable[[], Any], what: str, timeout: float = SAFETY_NET_S, every: float = 0.1, proc=None, log=None
) -> Any:
    """Wait for an event (``timeout`` is a safety net); fail at once if serve exits meanwhile."""

    def alive() -> str | None:
        if proc is None or proc.poll() is None:
            return None
        return f"serve exited ({proc.returncode}):\n{log.read_text()[-3000:] if log else ''}"

    return wait_until(cond, what, timeout=timeout, every=every, alive=alive)


def _held(release: Path) -> int | None:
    """The pid of the process holding at its ALLOOP_TEST_HOLD_AT point (released by creating ``release``)."""
    reached = Path(f"{release}.reached")
    return int(reached.read_text()) if reached.exists() else None


#: Installed in the serve processes of the SIGTERM test (a sitecustomize module on their PYTHONPATH):
#: on SIGUSR1 the main thread appends the names of the threads it is joining - waiting for - to
#: $ALLOOP_TEST_PROBE, one JSON list a line. Signal handlers run in the main thread, also while it
#: blocks in Thread.join, with the frame it was interrupted in.
PROBE = """
import json, os, signal, threading


def _joining(signum, frame):
    names = []
    while frame is not None:
        target = frame.f_locals.get("self") if frame.f_code.co_name == "join" else None
        if isinstance(target, threading.Thread):
            names.append(target.name)
        frame = frame.f_back
    with open(os.environ["ALLOOP_TEST_PROBE"], "a") as fh:
        fh.write(json.dumps(names) + "\\n")


if os.environ.get("ALLOOP_TEST_PROBE"):
    signal.signal(signal.SIGUSR1, _joining)
"""


def _probe_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Environment for a serve process that answers SIGUSR1 (see PROBE), and its answer file."""
    site = tmp_path / "probe-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(PROBE)
    answers = tmp_path / "probe.jsonl"
    path = os.pathsep.join(x for x in (str(site), os.environ.get("PYTHONPATH")) if x)
    return {"PYTHONPATH": path, "ALLOOP_TEST_PROBE": str(answers)}, answers


def _joining(proc: subprocess.Popen, answers: Path, log: Path) -> list[str]:
    """Ask serve (SIGUSR1) which threads its main thread is waiting for; wait for the answer."""
    seen = answers.read_text().count("\n") if answers.exists() else 0
    proc.send_signal(signal.SIGUSR1)
    _wait(lambda: answers.exists() and answers.read_text().count("\n") > seen, "serve's answer to SIGUSR1",
          proc=proc, log=log)
    return json.loads(answers.read_text().split("\n")[seen])


def _health(port: int) -> dict[str, Any] | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=SAFETY_NET_S).json()
    except httpx.HTTPError:
        return None


def _stop(proc: subprocess.Popen, timeout: float = SAFETY_NET_S) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(10)


def _rounds(db: str) -> list[tuple[int, str]]:
    engine = make_engine(db)
    with session_scope(engine) as s:
        out = [(r.number, r.state) for r in s.exec(select(Round).order_by(Round.number))]
    engine.dispose()
    return out


def _transitions(log_text: str, project: str) -> list[str]:
    return re.findall(rf"project {re.escape(project)} round (\d+: (?:\w+ -> \w+|created))", log_text)


# --- Label Studio: webhooks wake the loop ------------------------------------------------------------

def test_serve_drives_label_studio_rounds_from_webhooks(label_studio, tmp_path):
    folder = Path(label_studio.document_root) / "srv"
    pf = write_project(folder, project={"name": "srv", "seed": 0}, connector={"name": "label_studio"},
                       loop={"initial_size": 6, "batch_size": 4, "max_rounds": 4, "retrain_after_labels": 3},
                       serve={"interval_s": 3600})
    ws = open_workspace(pf)
    db = str(ws.engine.url)
    ws.close()
    port, log = _free_port(), tmp_path / "serve.log"
    ls = lss.client()
    who = lss.users(ls, ["sam"])["sam"]
    proc = _serve([pf], port, log)
    try:
        # started: round 0 pushed to Label Studio at once, the webhook registered
        pid = _wait(lambda: next((p.id for p in ls.projects.list(title="alloop: srv") if p.title == "alloop: srv"),
                                 None),
                    "the Label Studio project", proc=proc, log=log)
        _wait(lambda: ls.projects.get(pid).task_number == 6, "round 0's tasks", proc=proc, log=log)
        _wait(lambda: _rounds(db) == [(0, "COLLECTING")], "round 0 collecting", proc=proc, log=log)
        hooks = [h for h in ls.webhooks.list(project=str(pid)) if h.project == pid]
        hook_url = f"http://127.0.0.1:{port}/webhooks/label-studio?project=srv"
        assert len(hooks) == 1 and hooks[0].url == hook_url and hooks[0].send_for_all_actions is False
        assert set(hooks[0].actions) == {
            "ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"
        }

        # /healthz and `alloop status` show the next scheduled action
        health = _wait(lambda: (h := _health(port)) and h["projects"]["srv"]["state"] == "COLLECTING" and h, "healthz")
        assert health["status"] == "ok" and health["projects"]["srv"]["round"] == 0
        assert health["projects"]["srv"]["next_run_at"] and health["projects"]["srv"]["last_error"] is None
        r = run_cli("status", "-p", str(pf))
        assert r.returncode == 0, r.stdout
        assert re.search(r"Next: tick \(every 3600 s\) by \S+:\d+ at .* UTC \(in \d+ min\)", r.stdout), r.stdout
        nxt = json.loads(run_cli("status", "-p", str(pf), "--json").stdout)["next_action"]
        assert nxt["what"] == f"tick (every 3600 s) by {nxt['what'].split(' by ')[1]}" and nxt["at"].startswith("20")

        # a call with a wrong or missing secret is refused and changes nothing
        before = snapshot(db)
        event = {"action": "ANNOTATION_CREATED", "project": {"id": pid}, "annotation": {"id": 1, "project": pid}}
        wrong = {"X-Alloop-Secret": "wrong"}
        assert httpx.post(hook_url, json=event, headers=wrong, timeout=SAFETY_NET_S).status_code == 401
        assert httpx.post(hook_url, json=event, timeout=SAFETY_NET_S).status_code == 401
        # refused before any wake (the receiver's unit tests check no wake is called); the refusal is
        # logged before the 401 is answered
        assert snapshot(db) == before
        assert "Webhook from 127.0.0.1 refused: wrong X-Alloop-Secret header" in log.read_text()

        # retrain_after_labels = 3: the third label closes round 0, and round 1's tasks appear with no command run
        tasks0 = sorted(lss.tasks(ls, pid), key=lambda t: t.id)
        for t in tasks0[:3]:
            ls.annotations.create(t.id, result=lss.choice(DIGIT(t.data)), completed_by=who, was_cancelled=False)
        _wait(lambda: ls.projects.get(pid).task_number == 10, "round 1's tasks in Label Studio", proc=proc, log=log)
        _wait(lambda: _rounds(db) == [(0, "CLOSED"), (1, "COLLECTING")], "round 1 collecting", proc=proc, log=log)
        # /healthz shows round 1 once the run that got there ended (and logged what woke it)
        health = _wait(lambda: (h := _health(port)) and h["projects"]["srv"]["round"] == 1 and h, "healthz: round 1")
        text = log.read_text()
        assert "project srv round 0: COLLECTING -> CLOSED (early: 3 new labels, retrain_after_labels = 3)" in text
        # woken by Label Studio's webhook: the run that reached round 1 says so, and no scheduled
        # tick was due (every 3600 s: the next one is still more than half an hour away)
        assert re.search(r"project srv: round 1: .* \(woken by webhook ANNOTATION_CREATED\)$", text, re.M), text[-3000:]
        next_run = datetime.fromisoformat(health["projects"]["srv"]["next_run_at"])
        assert next_run - datetime.now(timezone.utc) > timedelta(minutes=30)

        # a late label for a task of the closed round is still ingested (attached to round 0)
        late = tasks0[3]
        ls.annotations.create(late.id, result=lss.choice(DIGIT(late.data)), completed_by=who, was_cancelled=False)
        engine = make_engine(db)

        def stored(where):
            with session_scope(engine) as s:
                return s.exec(
                    select(Annotation, Round.number).join(Round, Round.id == Annotation.round_id).where(where)
                ).all()

        got = _wait(lambda: stored(Annotation.sample_id.in_(  # type: ignore[attr-defined]
            select(Sample.id).where(Sample.key == late.data["sample_id"]))), "the late label", proc=proc, log=log)
        assert got[0][1] == 0 and got[0][0].valid

        # an annotation deleted in Label Studio is marked (kept), and not trained on
        gone = lss.tasks(ls, pid)
        first = next(t for t in gone if t.id == tasks0[0].id).annotations[0]
        first_id = first["id"] if isinstance(first, dict) else first.id
        ls.annotations.delete(first_id)
        row = _wait(lambda: [a for a, _ in stored(Annotation.source_id == str(first_id)) if not a.valid],
                    "the deleted annotation marked", proc=proc, log=log)
        assert row[0].invalid_reason == DELETED
        # two round-1 labels (+ the late one = 3 new since round 1's model) close round 1
        tasks1 = sorted((t for t in lss.tasks(ls, pid) if t.data["alloop_round"] == 1), key=lambda t: t.id)
        for t in tasks1[:2]:
            ls.annotations.create(t.id, result=lss.choice(DIGIT(t.data)), completed_by=who, was_cancelled=False)
        _wait(lambda: ls.projects.get(pid).task_number == 14, "round 2's tasks", proc=proc, log=log)
        with session_scope(engine) as s:
            mv = s.exec(select(ModelVersion).where(ModelVersion.round_number == 2)).one()
        assert mv.n_labels == 5  # 3 + 1 late - 1 deleted (round 0) + 2 (round 1): the deleted label is not trained on
        engine.dispose()

        # SIGTERM: exits 0, the next action is withdrawn
        assert _stop(proc) == 0
        text = log.read_text()
        assert "SIGTERM: no new runs" in text and "stopped" in text
        assert json.loads(run_cli("status", "-p", str(pf), "--json").stdout)["next_action"] is None
    finally:
        _kill(proc)
    # one log line per transition, each naming the project, none twice
    lines = _transitions(text, "srv")
    assert len(lines) == len(set(lines)) and "1: COLLECTING -> CLOSED" in lines and "2: SELECTED -> PUSHED" in lines
    snap = snapshot(db)
    assert_no_duplicates(snap)
    assert {state for _, state, *_ in snap["rounds"]} <= LEGAL
    # the secret is in no file alloop wrote (database, WAL, project file, log)
    work = Path(load_config(pf)[0].project.work_dir)
    for f in [*work.glob("alloop.db*"), pf, log]:
        assert SECRET.encode() not in f.read_bytes(), f
    # registering again is idempotent; a new secret or public URL updates the one webhook in place
    ws = open_workspace(pf, do_import=False)
    try:
        hook_id = str(hooks[0].id)  # webhook ids are strings in the protocol
        assert ws.connector.ensure_webhook(hook_url, SECRET) == hook_id
        moved = f"http://127.0.0.1:{port + 1}/webhooks/label-studio?project=srv"
        assert register_webhook(ws, moved, "rotated-" + SECRET) == hook_id
        (hook,) = [h for h in ls.webhooks.list(project=str(pid)) if h.project == pid]
        assert hook.url == moved and hook.headers == {"X-Alloop-Secret": "rotated-" + SECRET} and hook.is_active
    finally:
        ws.close()


# --- SIGTERM in the middle of a transition ------------------------------------------------------------

def test_sigterm_lets_the_transition_finish_a_second_signal_exits_at_once_and_a_restart_finishes(tmp_path):
    pf = write_project(tmp_path / "p", serve={"interval_s": 3600},
                       loop={"initial_size": 20, "batch_size": 10, "max_rounds": 3})
    ws = open_workspace(pf)
    db = str(ws.engine.url)
    ws.close()
    port, log = _free_port(), tmp_path / "serve.log"
    proc = None
    try:
        # 1. SIGTERM while round 1's CREATED -> TRAINED transaction is open (held there until the test
        # releases it): serve's main thread waits for the worker; released, the transition commits, and
        # only then does serve exit 0
        probe, answers = _probe_env(tmp_path)
        release = tmp_path / "release-trained"
        proc = _serve([pf], port, log, ALLOOP_TEST_HOLD_AT=f"1:before_commit:TRAINED={release}", **probe)
        assert _wait(lambda: _held(release), "serve inside the transaction", proc=proc, log=log) == proc.pid
        assert _rounds(db) == [(0, "CLOSED"), (1, "CREATED")]
        assert _joining(proc, answers, log) == []  # serving: its main thread waits for no thread
        proc.send_signal(signal.SIGTERM)
        _wait(lambda: "alloop-serve-t" in _joining(proc, answers, log), "serve's main thread to wait for the worker",
              proc=proc, log=log)
        assert _health(port)["status"] == "stopping"  # still answering while it waits
        assert _rounds(db) == [(0, "CLOSED"), (1, "CREATED")]
        release.touch()
        assert proc.wait(SAFETY_NET_S) == 0
        text = log.read_text()
        assert "SIGTERM: no new runs; finishing the transition in progress of t" in text
        assert _rounds(db) == [(0, "CLOSED"), (1, "TRAINED")]  # the transition finished, and nothing after it
        assert "1: CREATED -> TRAINED" in _transitions(text, "t")

        # 2. a second signal exits at once; the open transaction (TRAINED -> SCORED) is rolled back. The
        # hold is never released: the second signal is the only way out
        never = tmp_path / "release-scored"
        proc = _serve([pf], port, log, ALLOOP_TEST_HOLD_AT=f"1:before_commit:SCORED={never}", **probe)
        assert _wait(lambda: _held(never), "serve inside the second transaction", proc=proc, log=log) == proc.pid
        proc.send_signal(signal.SIGTERM)
        _wait(lambda: "alloop-serve-t" in _joining(proc, answers, log), "serve to take the first SIGTERM and wait",
              proc=proc, log=log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(SAFETY_NET_S) == 128 + signal.SIGTERM
        assert "second SIGTERM, exiting now" in log.read_text() and not never.exists()
        assert _rounds(db) == [(0, "CLOSED"), (1, "TRAINED")]
        snap = snapshot(db)
        assert_no_duplicates(snap)
        assert {state for _, state, *_ in snap["rounds"]} <= LEGAL

        # 3. a restarted serve takes over the dead process's lease and finishes the project
        proc = _serve([pf], port, log)
        health = _wait(lambda: (h := _health(port)) and h["projects"]["t"]["state"] == "finished" and h,
                       "the project to finish", proc=proc, log=log)
        assert health["projects"]["t"]["next_run_at"] is None
        assert _stop(proc) == 0
    finally:
        _kill(proc)
    snap = snapshot(db)
    assert_no_duplicates(snap)
    assert [(n, s) for n, s, *_ in snap["rounds"]] == [(0, "CLOSED"), (1, "CLOSED"), (2, "CLOSED")]
    assert snap["project"][0] == "finished" and len(snap["tasks"]) == 40
    lines = _transitions(log.read_text(), "t")
    assert len(lines) == len(set(lines)), "a transition was done twice"


# --- two serve processes, one PostgreSQL database ----------------------------------------------------

def test_two_serve_processes_on_one_postgres_database_never_advance_the_same_round(postgres_url, tmp_path):
    files = []
    for name in ("pa", "pb"):
        files.append(write_project(
            tmp_path / name, project={"name": name, "seed": 1, "database": postgres_url},
            connector={"name": "jsonl"}, serve={"interval_s": 1},
            loop={"initial_size": 6, "batch_size": 3, "max_rounds": 4}))
        open_workspace(files[-1]).close()
    logs = [tmp_path / "serve-1.log", tmp_path / "serve-2.log"]
    procs = [_serve(files, _free_port(), logs[0]), _serve(files, _free_port(), logs[1])]

    def label_what_was_pushed() -> bool:
        """The annotators: every pushed task gets its true label; True once both projects finished."""
        for pf in files:
            handoff = pf.parent / ".alloop" / "handoff"
            if not (handoff / "tasks.jsonl").exists():
                continue
            pushed = [json.loads(x)["key"] for x in (handoff / "tasks.jsonl").read_text().splitlines(keepends=True)
                      if x.endswith("\n")]  # a line being written is read next time
            labels = handoff / "labels.jsonl"
            done = {json.loads(x)["key"] for x in labels.read_text().splitlines()} if labels.exists() else set()
            with open(labels, "a") as fh:
                for k in pushed:
                    if k not in done:
                        fh.write(json.dumps({"key": k, "label": k.split("/")[0], "annotator": "ana"}) + "\n")
        engine = make_engine(postgres_url)
        with session_scope(engine) as s:
            finished = s.exec(select(Project.name).where(Project.status == "finished")).all()
        engine.dispose()
        return sorted(finished) == ["pa", "pb"]

    try:
        _wait(label_what_was_pushed, "both projects to finish", timeout=120, every=0.5)
        assert all(_stop(p) == 0 for p in procs)
    finally:
        for p in procs:
            _kill(p)
    texts = [x.read_text() for x in logs]
    engine = make_engine(postgres_url)
    with session_scope(engine) as s:
        ids = dict(s.exec(select(Project.id, Project.name)).all())
        rows = s.exec(select(Round).order_by(Round.id)).all()
        tasks = s.exec(select(Task.project_id, Task.sample_id)).all()
    engine.dispose()
    for pid, name in ids.items():
        mine = [r for r in rows if r.project_id == pid]
        assert [r.number for r in mine] == [0, 1, 2, 3]  # each number once, created in order
        assert all(r.state == "CLOSED" for r in mine)
        assert all(a.completed_at <= b.created_at for a, b in pairwise(mine))  # one round at a time
        assert all(r.created_at <= r.pushed_at <= r.completed_at for r in mine)
        # every transition was done once, by one of the two processes, in the order of the state machine
        done = [_transitions(t, name) for t in texts]
        both = done[0] + done[1]
        assert len(both) == len(set(both)) == 4 * 7, (name, done)  # 4 rounds x (created + 6 moves)
        # merged by time stamp (milliseconds), each log in its own order: equal stamps keep the order
        # the process wrote them in (a hand-over between processes takes several transactions)
        timed = list(heapq.merge(*(re.findall(rf"^(\S+ \S+) INFO project {name} round (\d+: .+)$", t, re.M)
                                   for t in texts), key=lambda m: m[0]))
        steps = ["created", "CREATED -> TRAINED", "TRAINED -> SCORED", "SCORED -> SELECTED", "SELECTED -> PUSHED",
                 "PUSHED -> COLLECTING", "COLLECTING -> CLOSED"]
        assert [line.split(" (")[0] for _, line in timed] == [f"{n}: {x}" for n in range(4) for x in steps]
        print(f"\n{name}: transitions by process 1: {len(done[0])}, by process 2: {len(done[1])}")
    assert len(tasks) == len(set(tasks)) == 2 * (6 + 3 * 3)
    assert all("changed state while this process worked on it" not in t for t in texts)
