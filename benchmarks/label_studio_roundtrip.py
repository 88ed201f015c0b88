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

    python benchmarks/label_studio_roundtrip.py            # starts its own server (.venv-ls)
    python benchmarks/label_studio_roundtrip.py --n 2000   # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _machine import machine_info, provenance_note
from sqlmodel import select

from alloop.config import dumps_toml, load_config
from alloop.loop.controller import Controller
from alloop.pool.importer import import_pool
from alloop.pool.sources import scan_source
from alloop.store.engine import session_scope
from alloop.store.models import Round, Sample, Selection
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


def project(folder: Path, texts: Path, name: str, batch: int) -> Workspace:
    folder.mkdir(parents=True)
    (folder / "alloop.toml").write_text(dumps_toml({
        "project": {"name": name, "task": "text"},
        "pool": {"source": {"type": "texts", "path": str(texts)}, "test_fraction": 0.05},
        "features": {"name": "hashing"},
        "strategy": {"name": "margin"},
        "connector": {"name": "label_studio", "params": {"batch_size": 2000, "timeout_s": 600}},
        "loop": {"initial_size": 20, "batch_size": batch, "max_rounds": 2},
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


def selected_round_1(ws: Workspace) -> list[tuple[str, str]]:
    with session_scope(ws.engine) as s:
        rnd = s.exec(select(Round).where(Round.number == 1)).one()
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--port", type=int, default=18480)
    ap.add_argument("--venv", type=Path, default=Path(__file__).resolve().parents[1] / ".venv-ls")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    from label_studio_sdk import LabelStudio

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
            texts = tmp / "texts.jsonl"
            truth = write_texts(texts, int(args.n * 1.2) + 100)

            # 1. push
            ws = project(tmp / "push", texts, "push", args.n)
            ctl = to_round_1_selected(ws, ls, truth)
            items = selected_round_1(ws)
            sdk_before = bare_push(ls, items, 2000)  # bare runs before and after alloop's: the server's
            alloop_push = timed_tick(ctl, "pushed")  # work grows with its database, so average them
            sdk_push = (sdk_before + bare_push(ls, items, 2000)) / 2

            # 2. ingest: the round's tasks exist in Label Studio with one annotation each
            ws2 = project(tmp / "ingest", texts, "ingest", args.n)
            ctl2 = to_round_1_selected(ws2, ls, truth)
            pid2 = next(p.id for p in ls.projects.list(title="alloop: ingest"))
            uid = ls.users.whoami().id
            tasks = [{"data": {"text": text, "sample_id": key, "alloop_round": 1},
                      "annotations": [{"completed_by": uid, "result": [{"from_name": "label", "to_name": "text",
                                       "type": "choices", "value": {"choices": [truth[key]]}}]}]}
                     for key, text in selected_round_1(ws2)]
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
        finally:
            server.stop()

    n = len(items)
    rows = [
        {"operation": f"push {n} tasks with predictions", "alloop_s": round(alloop_push, 2), "sdk_s": round(sdk_push, 2),
         "ratio": round(alloop_push / sdk_push, 3)},
        {"operation": f"ingest {n_ann} annotations (first pull)", "alloop_s": round(alloop_ingest, 2),
         "sdk_s": round(sdk_ingest, 2), "ratio": round(alloop_ingest / sdk_ingest, 3)},
        {"operation": "pull again, nothing new, close the round", "alloop_s": round(alloop_ingest_2, 2),
         "sdk_s": round(sdk_ingest, 2), "ratio": round(alloop_ingest_2 / sdk_ingest, 3)},
    ]
    machine = machine_info(__file__)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine,
            "cpu": machine["cpu"], "cores": machine["logical_cores"], "label_studio": server.version, "server_cold_start_s": round(start_s, 1),
            "adopt_s": round(adopt_s, 1), "load_avg_end": os.getloadavg()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "label_studio_roundtrip.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = ["# Label Studio round trip: alloop vs bare SDK", "",
             (f"Label Studio {meta['label_studio']} (sqlite, loopback), {meta['cpu']}, {meta['cores']} cores, "
              f"{meta['date']}, {provenance_note(machine)}."),
             "Ratio = alloop / bare SDK in the same run (target <= 1.2).", "",
             "| operation | alloop (s) | bare SDK (s) | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['operation']} | {r['alloop_s']} | {r['sdk_s']} | {r['ratio']} |" for r in rows]
    lines += ["", f"Not timed: server cold start {meta['server_cold_start_s']} s; adopting {n} tasks found in Label "
              f"Studio after a simulated crash {meta['adopt_s']} s."]
    (args.out / "label_studio_roundtrip.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
