"""alloop's Label Studio round trip vs the same work with bare SDK calls, against a real server.

1. **Push 10,000 tasks with predictions.** Bare: build the task dicts, ``import_tasks`` in the
   same batches, set the project's model version. alloop: the whole SELECTED -> PUSHED tick
   of a round of 10,000 (read the selection and the model's probabilities, look for tasks to
   adopt, import, set the model version, record 10,000 task ids, commit).
2. **Ingest 10,000 annotations.** Bare: ``exports.download_sync`` (JSON) and parse every
   annotation. Bare runs happen before and after alloop's and are averaged (Label Studio's own
   cost grows as its database fills). alloop: the whole collect tick (export, parse, upsert 10,000 annotation rows,
   count resolved tasks, close the round).

The annotated tasks of (2) are created in one import with inline annotations (creating 10,000
annotations one by one takes ~10 minutes here) and adopted by alloop as if a crash had
happened between its import and its commit.

3. **Collect tick against project size** (issue 14): for each N (default 10^3, 10^4, 10^5) a
   project whose open round holds N tasks, half of them annotated (one import with inline
   annotations, adopted by the push tick), pulled once in full; then 1% of the tasks get a new
   annotation (the annotations API, one call per task, in threads: Label Studio has no bulk
   annotation endpoint) and one collect tick is timed (the incremental pull: one filtered listing of
   the tasks changed since the previous pull, an export of those). The baseline in the same run: a
   collect tick whose pull is a full reconciliation (what every tick cost before incremental
   pulls), after another 1% changed. Target: tick(10^5) / tick(10^3) <= 2.
4. **/predict of 1,000 tasks** through ``alloop serve``'s ML backend (a real ``alloop serve``
   process, real HTTP, Label Studio's payload shape; then "Retrieve Predictions" in Label Studio
   itself, after ``alloop labelstudio connect``), against Label Studio's default predict time limit
   (``ML_TIMEOUT_PREDICT``, read from the installed Label Studio's ``ml/api_connector.py``); the
   baseline in the same run: the round model's ``predict_proba`` on the same 1,000 feature rows.

    python benchmarks/label_studio_roundtrip.py            # starts its own server (.venv-ls or $ALLOOP_LS_VENV)
    python benchmarks/label_studio_roundtrip.py --n 2000 --sizes 1000,10000   # smaller
    python benchmarks/label_studio_roundtrip.py --sections collect,predict    # some sections only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
from _machine import machine_info, provenance_note
from sqlmodel import select

from alloop.config import dumps_toml, load_config
from alloop.loop.controller import Controller
from alloop.pool.importer import import_pool
from alloop.pool.sources import scan_source
from alloop.store.arrays import arrays_of
from alloop.store.engine import make_engine, session_scope
from alloop.store.models import ConnectorState, Round, Sample, Selection
from alloop.workspace import Workspace
from connectors.label_studio.labeling_config import generate
from connectors.label_studio.server import LocalLabelStudio, port_is_free

RESULTS = Path(__file__).parent / "results"
WORDS = ["great", "awful", "moving", "dull", "smart", "clumsy", "warm", "boring", "fresh", "stale"]


def write_texts(path: Path, n: int) -> dict[str, str]:
    truth = {}
    with path.open("w") as fh:
        for i in range(n):
            label = "pos" if i % 2 else "neg"
            words = " ".join(WORDS[(i * 7 + j) % 10] for j in range(8))
            fh.write(json.dumps({"id": f"t{i:06d}", "text": f"{label} {words} #{i}", "label": label}) + "\n")
            truth[f"t{i:06d}"] = label
    return truth


def project(folder: Path, texts: Path, name: str, batch: int, initial: int = 20) -> Workspace:
    folder.mkdir(parents=True)
    (folder / "alloop.toml").write_text(dumps_toml({
        "project": {"name": name, "task": "text"},
        "pool": {"source": {"type": "texts", "path": str(texts)}, "test_fraction": 0.05},
        "features": {"name": "hashing"},
        "strategy": {"name": "margin"},
        "connector": {"name": "label_studio", "params": {"batch_size": 2000, "timeout_s": 600}},
        "loop": {"initial_size": initial, "batch_size": batch, "max_rounds": 2},
        "serve": {"interval_s": 3600},
    }))
    cfg, _ = load_config(folder)
    ws = Workspace(cfg)
    ws.ensure_project()
    import_pool(ws.engine, ws.name, scan_source(cfg.pool.source, ws.work_dir), test_fraction=cfg.pool.test_fraction)
    return ws


def to_round_1_selected(ws: Workspace, ls, truth: dict[str, str]) -> Controller:
    """Round 0 pushed, labeled through the API, closed; round 1 trained, scored, selected."""
    ctl = Controller(ws)
    ctl.run()
    pid = next(p.id for p in ls.projects.list(title=f"alloop: {ws.name}"))
    uid = ls.users.whoami().id
    for t in ls.tasks.list(project=pid, page_size=1000):
        label = truth[t.data["sample_id"]]
        ls.annotations.create(t.id, result=[{"from_name": "label", "to_name": "text", "type": "choices",
                                            "value": {"choices": [label]}}], completed_by=uid)
    while True:
        r = ctl.tick()
        if r.action == "selected":
            return ctl


def selected_in_round(ws: Workspace, number: int = 1) -> list[tuple[str, str]]:
    with session_scope(ws.engine) as s:
        rnd = s.exec(select(Round).where(Round.number == number)).one()
        rows = s.exec(select(Sample.key, Sample.data).join(Selection, Selection.sample_id == Sample.id)
                      .where(Selection.round_id == rnd.id).order_by(Selection.rank)).all()
    return [(k, d["text"]) for k, d in rows]


def bare_push(ls, items: list[tuple[str, str]], batch: int) -> float:
    p = ls.projects.create(title=f"bench: bare SDK push {time.time()}", label_config=generate("text", ["neg", "pos"]))
    t0 = time.perf_counter()
    tasks = [{"data": {"text": text, "sample_id": key, "alloop_round": 1},
              "predictions": [{"model_version": "bench-round-1", "score": 0.75, "result": [
                  {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["pos"]}, "score": 0.75}]}]}
             for key, text in items]
    ids = []
    for i in range(0, len(tasks), batch):
        ids += ls.projects.import_tasks(p.id, request=tasks[i:i + batch], return_task_ids=True).task_ids
    ls.projects.update(p.id, model_version="bench-round-1", show_collab_predictions=True)
    assert len(ids) == len(items)
    return time.perf_counter() - t0


def bare_ingest(ls, pid: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = json.loads(b"".join(ls.projects.exports.download_sync(pid, export_type="JSON", download_all_tasks=False)))
    anns = [(t["data"]["sample_id"], a["id"], a["completed_by"], a["result"][0]["value"]["choices"][0], a["was_cancelled"],
             a["created_at"], a["updated_at"], a["lead_time"]) for t in rows for a in t["annotations"]]
    return time.perf_counter() - t0, len(anns)


def timed_tick(ctl: Controller, expect: str) -> float:
    t0 = time.perf_counter()
    r = ctl.tick()
    seconds = time.perf_counter() - t0
    assert r.action == expect, r
    return seconds


SECTIONS = ("roundtrip", "collect", "predict")
FIXED = 10  # tasks changed before the fixed-size tick of the collect section


def ls_predict_timeout(venv: Path) -> tuple[float, str]:
    """Label Studio's default time limit for a /predict call, from its own source: ``(seconds, where)``."""
    for f in sorted(venv.glob("lib/python*/site-packages/label_studio/ml/api_connector.py")):
        m = re.search(r"^(TIMEOUT_PREDICT = float\(get_env\('ML_TIMEOUT_PREDICT', ([\d.]+)\)\))", f.read_text(), re.M)
        if m:
            return float(m.group(2)), f"label_studio/ml/api_connector.py: {m.group(1)}"
    raise SystemExit(f"ML_TIMEOUT_PREDICT not found in {venv}'s label_studio/ml/api_connector.py")


def http_log(ws: Workspace) -> list[str]:
    """Every HTTP request the project's connector sends from now on (``METHOD /path``)."""
    sent: list[str] = []
    client = ws.connector.api.sdk._client_wrapper.httpx_client.httpx_client  # type: ignore[attr-defined]
    hooks = client.event_hooks
    hooks["request"] = [*hooks.get("request", []), lambda req: sent.append(f"{req.method} {req.url.path}")]
    client.event_hooks = hooks
    return sent


#: seconds spent in the connector's pull, its listing of changed tasks and its exports (see ``spend``)
SPENT = {"pull": 0.0, "list": 0.0, "export": 0.0}


def spend(key: str, fn):
    """``fn``, adding its run time to ``SPENT[key]`` (measurement only: same arguments, same result)."""
    def timed(*args, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            SPENT[key] += time.perf_counter() - t0
    return timed


def annotate(ls, jobs: list[tuple[int, str]], uid: int, threads: int) -> float:
    """One new annotation per ``(task id, label)`` through the annotations API; seconds taken."""
    def one(job: tuple[int, str]) -> None:
        ls.annotations.create(job[0], result=[{"from_name": "label", "to_name": "text", "type": "choices",
                                               "value": {"choices": [job[1]]}}], completed_by=uid)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, jobs))
    return time.perf_counter() - t0


def collect_at(ls, tmp: Path, n: int, change: float, threads: int, uid: int) -> dict:
    """Section 3 at one size: the open round holds ``n`` tasks, half annotated; first pull; 1%
    changed, an incremental tick; another 1% changed, a full (reconciliation) tick."""
    name = f"tick{n}"
    texts = tmp / f"{name}.jsonl"
    truth = write_texts(texts, int(n * 1.1) + 100)
    t0 = time.perf_counter()
    ws = project(tmp / name, texts, name, batch=n, initial=n)
    ctl = Controller(ws)
    for _ in range(10):
        r = ctl.tick()
        if r.action == "selected":
            break
    assert r.action == "selected" and r.round == 0, r
    alloop_setup_s = time.perf_counter() - t0
    conn = ws.connector
    pid = conn.project_id  # type: ignore[attr-defined]
    items = selected_in_round(ws, 0)
    assert len(items) == n
    # the round's tasks, every other one annotated, in one import (as the push tick would have
    # imported them, then adopted by it): creating n/2 annotations one by one would take hours
    tasks = [{"data": {"text": text, "sample_id": key, "alloop_round": 0, "alloop_rank": i + 1, "alloop_score": None},
              **({"annotations": [{"completed_by": uid, "result": [{"from_name": "label", "to_name": "text",
                  "type": "choices", "value": {"choices": [truth[key]]}}]}]} if i % 2 == 0 else {})}
             for i, (key, text) in enumerate(items)]
    t0 = time.perf_counter()
    ids: list[int] = []
    for i in range(0, n, 2000):
        ids += ls.projects.import_tasks(pid, request=tasks[i:i + 2000], return_task_ids=True).task_ids
    import_s = time.perf_counter() - t0
    imported_at = time.monotonic()
    assert len(ids) == n
    r = ctl.tick()
    assert r.action == "pushed" and f"adopted {n}" in r.message, r
    sent = http_log(ws)
    reads = conn.reads  # type: ignore[attr-defined]
    conn.pull_changes = spend("pull", conn.pull_changes)  # type: ignore[attr-defined]
    conn._export = spend("export", conn._export)  # type: ignore[attr-defined]

    def tick(expect: str) -> dict:
        before, calls, spent = dict(reads), len(sent), dict(SPENT)
        t0 = time.perf_counter()
        r = ctl.tick()
        seconds = time.perf_counter() - t0
        assert r.action == expect, r
        done = {k: reads[k] - before[k] for k in reads}
        pull = {k: round(SPENT[k] - spent[k], 3) for k in SPENT}
        return {"s": round(seconds, 3), "pull_s": pull["pull"], "list_s": pull["list"], "export_s": pull["export"],
                "alloop_s": round(seconds - pull["pull"], 3), "full": done["full"] == 1, "listed": done["listed"],
                "exported": done["exported"], "http_calls": len(sent) - calls,
                "calls": sorted(set(sent[calls:])), "message": r.message}

    # the first pull starts after the import is older than the watermark margin (as in a live
    # project, where the import happened a round ago): else the incremental pull re-reads it
    margin = conn.params.watermark_margin_s  # type: ignore[attr-defined]
    time.sleep(max(0.0, margin + 1.5 - (time.monotonic() - imported_at)))
    first = tick("collecting")
    annotated = (n + 1) // 2  # the export lists the tasks that have annotations
    assert first["full"] and first["exported"] == annotated, first
    unlabeled = [(tid, truth[key]) for i, (tid, (key, _)) in enumerate(zip(ids, items)) if i % 2 == 1]
    k = max(1, round(n * change))
    change_s = annotate(ls, unlabeled[:k], uid, threads)
    changed_at = time.monotonic()
    incremental = tick("waiting")
    assert not incremental["full"] and incremental["exported"] == k and f"{k} new" in incremental["message"], incremental
    # the same with a fixed number of changed tasks at every size: what the size alone costs
    # (a pull reads what changed since the previous one began, minus the margin: one tick once the
    # 1% is older than the margin moves the cursor past it)
    fixed = unlabeled[k:k + FIXED]
    time.sleep(max(0.0, margin + 1.5 - (time.monotonic() - changed_at)))
    tick("waiting")
    annotate(ls, fixed, uid, threads)
    few = tick("waiting")
    assert not few["full"] and few["exported"] == len(fixed), few
    # the baseline: another 1% changed, then the reconciliation pull (due every reconcile_every pulls)
    annotate(ls, unlabeled[k + FIXED:2 * k + FIXED], uid, threads)
    with session_scope(ws.engine) as s:
        state = s.exec(select(ConnectorState)).one()
        state.state = {**state.state, "pulls": conn.params.reconcile_every - 1}  # type: ignore[attr-defined]
        s.add(state)
        s.commit()
    full = tick("waiting")
    assert full["full"] and full["exported"] == annotated + 2 * k + len(fixed) and f"{k} new" in full["message"], full
    ws.close()
    print(f"collect at {n}: import {import_s:.1f} s, first pull {first['s']:.2f} s, 1% changed in {change_s:.1f} s, "
          f"incremental tick {incremental['s']:.3f} s, full tick {full['s']:.2f} s", flush=True)
    return {"tasks": n, "changed": k, "alloop_setup_s": round(alloop_setup_s, 1), "import_s": round(import_s, 1),
            "change_s": round(change_s, 1), "change_calls": k, "first_pull": first, "incremental": incremental,
            "fixed": few, "full": full}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(cond, what: str, timeout: float, proc: subprocess.Popen, log: Path):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"alloop serve exited ({proc.returncode}) waiting for {what}:\n{log.read_text()[-3000:]}")
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def predict_section(ls, tmp: Path, n: int, timeout_s: float) -> dict:
    """Section 4: /predict of ``n`` tasks through a real ``alloop serve``, against the bare model."""
    texts = tmp / "predict.jsonl"
    truth = write_texts(texts, n * 3)
    ws = project(tmp / "predict", texts, "predict", batch=10)
    ctl = to_round_1_selected(ws, ls, truth)  # round 1 trained and scored the pool
    pid = ws.connector.project_id  # type: ignore[attr-defined]
    project_row = ws.project()
    with session_scope(ws.engine) as s:
        rnd = s.exec(select(Round).where(Round.number == 1)).one()
        rows = s.exec(select(Sample.key, Sample.id, Sample.data).where(Sample.split == "pool")
                      .order_by(Sample.id).limit(n)).all()
    assert len(rows) == n
    model = ctl.env.models.of(rnd)
    t0 = time.perf_counter()
    kept, X = ctl.env.data.features(project_row.id, arrays_of(ws.engine, [i for _, i, _ in rows]))
    features_s = time.perf_counter() - t0
    bare = []
    for _ in range(3):
        t0 = time.perf_counter()
        P = model.predict_proba(X)
        bare.append(time.perf_counter() - t0)
    assert len(kept.ids) == n
    want = {int(i): project_row.labels[int(np.argmax(p))] for i, p in zip(kept.ids, P)}
    db = str(ws.engine.url)
    pf = tmp / "predict" / "alloop.toml"
    ws.close()

    user, password = "labelstudio", "bench-ml-backend-password-0123456789"
    env = {**os.environ, "ALLOOP_DISABLE_PROGRESS_BARS": "1", "ALLOOP_ML_BACKEND_USER": user,
           "ALLOOP_ML_BACKEND_PASSWORD": password}
    port, log = free_port(), tmp / "serve.log"
    serve_url = f"http://127.0.0.1:{port}"
    url = f"{serve_url}/ml/predict"
    alloop = [sys.executable, "-c", "import sys; from alloop.cli.main import main; sys.exit(main())"]
    with open(log, "ab") as fh:
        proc = subprocess.Popen([*alloop, "serve", "--no-webhook", "--port", str(port), "-p", str(pf)], env=env,
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def health() -> bool:
            try:
                return httpx.get(url + "/health", auth=(user, password), timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        def collecting() -> bool:
            engine = make_engine(db)
            with session_scope(engine) as s:
                state = s.exec(select(Round.state).where(Round.number == 1)).one()
            engine.dispose()
            return state == "COLLECTING"

        wait_for(health, "the ML backend", 300, proc, log)
        wait_for(collecting, "round 1 pushed by alloop serve", 300, proc, log)  # its first tick: idle afterwards
        label_config = ls.projects.get(pid).label_config
        body = {"tasks": [{"id": 10 ** 6 + j, "data": {"text": d["text"], "sample_id": key}, "annotations": [],
                           "predictions": [], "project": pid} for j, (key, _, d) in enumerate(rows)],
                "project": f"{pid}.0", "label_config": label_config,
                "params": {"login": None, "password": None, "context": None}}
        direct = []
        for _ in range(3):
            t0 = time.perf_counter()
            res = httpx.post(url + "/predict", json=body, auth=(user, password), timeout=timeout_s)
            direct.append(time.perf_counter() - t0)
            assert res.status_code == 200, res.text[:500]
            results = res.json()["results"]
            assert len(results) == n and all(len(x) == 1 for x in results)
            got = [x[0]["result"][0]["value"]["choices"][0] for x in results]
            assert got == [want[int(i)] for _, i, _ in rows]  # the same labels as the bare model
        # Label Studio itself: connect the backend, "Retrieve Predictions" on n new tasks (one /predict)
        r = subprocess.run([*alloop, "labelstudio", "connect", "-p", str(pf), "--serve-url", serve_url], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "registered" in r.stdout, r.stdout + r.stderr
        imported = ls.projects.import_tasks(pid, request=[{"data": {"text": d["text"], "sample_id": key}}
                                                          for key, _, d in rows], return_task_ids=True)
        t0 = time.perf_counter()
        ls.actions.create(id="retrieve_tasks_predictions", project=pid,
                          selected_items={"all": False, "included": list(imported.task_ids)})
        through_ls = time.perf_counter() - t0
        new = set(imported.task_ids)
        stored = [p for p in ls.predictions.list(project=pid) if p.task in new]
        assert len(stored) == n and {p.model_version for p in stored} == {"predict-round-1"}, len(stored)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    served = [float(x) for x in re.findall(rf"predicted {n} of {n} tasks with predict-round-1 in ([\d.]+) s",
                                           log.read_text())]
    assert len(served) == 4, served  # three direct calls, then Label Studio's
    print(f"/predict of {n}: direct {min(direct):.3f} s, in alloop {min(served[:3]):.3f} s, through Label Studio "
          f"{through_ls:.2f} s; bare predict_proba {min(bare) * 1000:.1f} ms", flush=True)
    return {"tasks": n, "direct_s": [round(x, 4) for x in direct], "in_alloop_s": served[:3],
            "label_studio_call_in_alloop_s": served[3], "through_label_studio_s": round(through_ls, 3),
            "bare_predict_proba_s": [round(x, 5) for x in bare], "bare_features_s": round(features_s, 4),
            "model": type(model).__name__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    ap.add_argument("--n", type=int, default=10_000, help="tasks of the push and ingest round trip")
    ap.add_argument("--sizes", default="1000,10000,100000", help="project sizes of the collect tick")
    ap.add_argument("--change", type=float, default=0.01, help="fraction of tasks changed before a tick")
    ap.add_argument("--threads", type=int, default=4, help="threads creating the changed annotations")
    ap.add_argument("--predict-n", type=int, default=1000)
    ap.add_argument("--port", type=int, default=18480)
    ap.add_argument("--venv", type=Path, default=Path(os.environ.get(
        "ALLOOP_LS_VENV", Path(__file__).resolve().parents[1] / ".venv-ls")))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    if not sections or set(sections) - set(SECTIONS):
        raise SystemExit(f"--sections: comma-separated, of {', '.join(SECTIONS)}")
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    timeout_s, timeout_src = ls_predict_timeout(args.venv)
    machine = machine_info(__file__)  # the code as the run starts
    from label_studio_sdk import LabelStudio

    started = time.perf_counter()
    roundtrip: list[dict] = []
    collect: list[dict] = []
    predict: dict | None = None
    adopt_s = None
    with tempfile.TemporaryDirectory(prefix="alloop-ls-bench-") as tmp:
        tmp = Path(tmp)
        if not port_is_free(args.port):
            raise SystemExit(f"port {args.port} is busy; pass --port")
        server = LocalLabelStudio(data_dir=tmp / "ls", port=args.port, venv=args.venv, document_root=tmp / "docroot")
        (tmp / "docroot").mkdir()
        t0 = time.perf_counter()
        server.start()
        start_s = time.perf_counter() - t0
        creds = server.credentials()
        os.environ["LABEL_STUDIO_URL"], os.environ["LABEL_STUDIO_API_KEY"] = server.url, creds["LABEL_STUDIO_API_KEY"]
        try:
            ls = LabelStudio(base_url=server.url, api_key=creds["LABEL_STUDIO_API_KEY"], timeout=600)
            uid = ls.users.whoami().id
            if "predict" in sections:  # first: a small project, before the big ones fill the server
                predict = predict_section(ls, tmp, args.predict_n, timeout_s)
            if "roundtrip" in sections:
                roundtrip, adopt_s = roundtrip_section(ls, tmp, args.n, uid)
            if "collect" in sections:
                import connectors.label_studio.connector as lsc

                lsc.changed_task_ids = spend("list", lsc.changed_task_ids)
                collect = [collect_at(ls, tmp, n, args.change, args.threads, uid) for n in sizes]
        finally:
            server.stop()
    total_s = time.perf_counter() - started
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine,
            "cpu": machine["cpu"], "cores": machine["logical_cores"], "label_studio": server.version,
            "server_cold_start_s": round(start_s, 1), "adopt_s": adopt_s, "sections": sections,
            "total_s": round(total_s, 1), "load_avg_end": os.getloadavg()}
    out: dict = {"meta": meta, "rows": roundtrip}
    lines = ["# Label Studio round trip: alloop vs bare SDK", "",
             (f"Label Studio {meta['label_studio']} (sqlite, loopback), {meta['cpu']}, {meta['cores']} cores, "
              f"{meta['date']}, {provenance_note(machine)}. Whole run {meta['total_s']} s; not timed: server cold "
              f"start {meta['server_cold_start_s']} s.")]
    if roundtrip:
        lines += ["", "## Push and ingest", "", "Ratio = alloop / bare SDK in the same run (target <= 1.2).", "",
                  "| operation | alloop (s) | bare SDK (s) | ratio |", "|---|---|---|---|"]
        lines += [f"| {r['operation']} | {r['alloop_s']} | {r['sdk_s']} | {r['ratio']} |" for r in roundtrip]
        lines += ["", f"Not timed: adopting {args.n} tasks found in Label Studio after a simulated crash {adopt_s} s."]
    if collect:
        small, big = collect[0], collect[-1]

        def growth(key: str) -> float:
            return round(big[key]["s"] / small[key]["s"], 2)

        ratio = growth("incremental")
        out["collect"] = {"rows": collect, "ratio": ratio, "ratio_fixed": growth("fixed"), "ratio_full": growth("full"),
                          "of": [small["tasks"], big["tasks"]], "target": 2.0}
        lines += ["", "## Collect tick against project size (1% of the tasks changed)", "",
                  ("One collect tick of the open round (the project's only one), which holds every task, half of them "
                   "annotated; before it, 1% of the tasks got a new annotation. Incremental: the pull lists the tasks "
                   "changed since the previous pull (Data Manager filter on `updated_at`, server clock) and exports "
                   "those. Baseline, same run: the tick whose pull is the full reconciliation (every annotated task "
                   "exported; every `reconcile_every`-th pull, default 20), after another 1% changed. Pull: the "
                   "connector's `pull_changes` (listing + export + the rest: server time, parsing); alloop: the rest "
                   "of the tick (its own database: the project's task rows, the upserts, the counts). Listed / "
                   "exported: task rows Label Studio returned; HTTP calls: the connector's requests in the tick."), "",
                  "| tasks | changed | incremental tick (s) | pull: listing + export (s) | alloop (s) | listed / exported "
                  "| HTTP calls | full tick (s) | pull (s) | exported | HTTP calls | full / incremental |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in collect:
            inc, full = c["incremental"], c["full"]
            lines.append(f"| {c['tasks']} | {c['changed']} | {inc['s']:.3f} | {inc['pull_s']:.3f}: {inc['list_s']:.3f} "
                         f"+ {inc['export_s']:.3f} | {inc['alloop_s']:.3f} | {inc['listed']} / {inc['exported']} | "
                         f"{inc['http_calls']} | {full['s']:.2f} | {full['pull_s']:.2f} | {full['exported']} | "
                         f"{full['http_calls']} | {full['s'] / inc['s']:.1f}x |")
        verdict = "met" if ratio <= 2 else "missed"
        lines += ["", (f"**Incremental tick at {big['tasks']} / at {small['tasks']} tasks: {ratio:.2f}** (target <= 2: "
                       f"{verdict}); the full tick: {growth('full'):.1f}x. With 1% changed, the changed tasks grow "
                       f"with the project ({small['changed']} -> {big['changed']}); the same tick with {FIXED} tasks "
                       f"changed at every size shows what the size alone costs: {growth('fixed'):.2f}x."), "",
                  f"| tasks | {FIXED} changed: tick (s) | pull: listing + export (s) | alloop (s) | listed / exported |",
                  "|---|---|---|---|---|"]
        lines += [f"| {c['tasks']} | {c['fixed']['s']:.3f} | {c['fixed']['pull_s']:.3f}: {c['fixed']['list_s']:.3f} + "
                  f"{c['fixed']['export_s']:.3f} | {c['fixed']['alloop_s']:.3f} | {c['fixed']['listed']} / "
                  f"{c['fixed']['exported']} |" for c in collect]
        lines += ["", "Set-up, not in the ticks:", "", "| tasks | import, half with inline annotations (s) | first "
                  f"pull tick, full (s) | 1% new annotations, one API call each in {args.threads} threads (s) |",
                  "|---|---|---|---|"]
        lines += [f"| {c['tasks']} | {c['import_s']} | {c['first_pull']['s']:.2f} | {c['change_s']} "
                  f"({c['change_calls']} calls) |" for c in collect]
    if predict is not None:
        p = predict
        out["predict"] = {**p, "label_studio_timeout_s": timeout_s, "timeout_source": timeout_src}
        d, a, b = min(p["direct_s"]), min(p["in_alloop_s"]), min(p["bare_predict_proba_s"])
        lines += ["", f"## /predict of {p['tasks']} tasks (alloop serve's ML backend)", "",
                  (f"Label Studio's default limit for a /predict call: **{timeout_s:g} s** (`{timeout_src}`). "
                   f"Direct: an HTTP POST of Label Studio's payload (the {p['tasks']} tasks with their text) to a "
                   "running `alloop serve` (best of 3; inside alloop: the time its log reports). Through Label Studio: "
                   f"\"Retrieve Predictions\" on {p['tasks']} new tasks after `alloop labelstudio connect` (Label "
                   "Studio's health and setup calls, one /predict, storing the predictions). Baseline, same run: the "
                   f"round's model ({p['model']}) `predict_proba` on the same {p['tasks']} feature rows (best of 3; "
                   f"computing the features: {p['bare_features_s']} s more)."), "",
                  "| call | seconds | share of Label Studio's limit |", "|---|---|---|",
                  f"| direct /predict, HTTP included | {d:.3f} | {d / timeout_s:.3%} |",
                  f"| inside alloop (from its log) | {a:.3f} | {a / timeout_s:.3%} |",
                  f"| Retrieve Predictions through Label Studio | {p['through_label_studio_s']:.2f} | "
                  f"{p['through_label_studio_s'] / timeout_s:.2%} |",
                  f"| bare `predict_proba` (baseline) | {b:.4f} | {b / timeout_s:.3%} |",
                  "", f"Direct /predict / bare predict_proba: {d / b:.0f}x."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "label_studio_roundtrip.json").write_text(json.dumps(out, indent=2))
    (args.out / "label_studio_roundtrip.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def roundtrip_section(ls, tmp: Path, n: int, uid: int) -> tuple[list[dict], float]:
    """Sections 1 and 2: push and ingest ``n`` tasks, alloop vs the bare SDK."""
    texts = tmp / "texts.jsonl"
    truth = write_texts(texts, int(n * 1.2) + 100)

    # 1. push
    ws = project(tmp / "push", texts, "push", n)
    ctl = to_round_1_selected(ws, ls, truth)
    items = selected_in_round(ws)
    sdk_before = bare_push(ls, items, 2000)  # bare runs before and after alloop's: the server's
    alloop_push = timed_tick(ctl, "pushed")  # work grows with its database, so average them
    sdk_push = (sdk_before + bare_push(ls, items, 2000)) / 2

    # 2. ingest: the round's tasks exist in Label Studio with one annotation each
    ws2 = project(tmp / "ingest", texts, "ingest", n)
    ctl2 = to_round_1_selected(ws2, ls, truth)
    pid2 = next(p.id for p in ls.projects.list(title="alloop: ingest"))
    tasks = [{"data": {"text": text, "sample_id": key, "alloop_round": 1},
              "annotations": [{"completed_by": uid, "result": [{"from_name": "label", "to_name": "text",
                               "type": "choices", "value": {"choices": [truth[key]]}}]}]}
             for key, text in selected_in_round(ws2)]
    for i in range(0, len(tasks), 2000):
        ls.projects.import_tasks(pid2, request=tasks[i:i + 2000])
    t0 = time.perf_counter()
    r = ctl2.tick()
    adopt_s = time.perf_counter() - t0
    assert r.action == "pushed" and f"adopted {len(tasks)}" in r.message, r
    sdk_before, _ = bare_ingest(ls, pid2)
    alloop_ingest = timed_tick(ctl2, "collecting")
    sdk_after, n_ann = bare_ingest(ls, pid2)
    sdk_ingest = (sdk_before + sdk_after) / 2
    alloop_ingest_2 = timed_tick(ctl2, "closed")  # the same pull again: nothing new, then close
    ws.close()
    ws2.close()
    n = len(items)
    rows = [
        {"operation": f"push {n} tasks with predictions", "alloop_s": round(alloop_push, 2), "sdk_s": round(sdk_push, 2),
         "ratio": round(alloop_push / sdk_push, 3)},
        {"operation": f"ingest {n_ann} annotations (first pull)", "alloop_s": round(alloop_ingest, 2),
         "sdk_s": round(sdk_ingest, 2), "ratio": round(alloop_ingest / sdk_ingest, 3)},
        {"operation": "pull again, nothing new, close the round", "alloop_s": round(alloop_ingest_2, 2),
         "sdk_s": round(sdk_ingest, 2), "ratio": round(alloop_ingest_2 / sdk_ingest, 3)},
    ]
    print("\n".join(str(r) for r in rows), flush=True)
    return rows, round(adopt_s, 1)


if __name__ == "__main__":
    main()
