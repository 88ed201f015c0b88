"""A classification project trained by the team's own script (the command learner), through the CLI."""

from __future__ import annotations

import json

import numpy as np
from sqlmodel import select

from alloop.store.engine import session_scope
from alloop.store.models import ModelVersion, Round, Sample, Selection
from alloop.strategies._scores import margin
from tests.conftest import open_workspace, run_cli, write_project

SCRIPT = r'''
import json, os, sys
import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression

labels = json.load(open(os.environ["ALLOOP_LABELS"]))
def pixels(path):
    return np.asarray(Image.open(path).convert("L").resize((8, 8)), dtype=np.float64).ravel() / 255.0
train = [json.loads(line) for line in open(sys.argv[1])]
predict = [json.loads(line) for line in open(sys.argv[2])]
model = LogisticRegression(max_iter=500).fit([pixels(r["path"]) for r in train], [r["label"] for r in train])
proba = model.predict_proba([pixels(r["path"]) for r in predict])
with open(sys.argv[3], "w") as out:
    for r, p in zip(predict, proba):
        out.write(json.dumps({"key": r["key"], "proba": dict(zip(model.classes_.tolist(), p.tolist()))}) + "\n")
json.dump({"n_train": len(train)}, open(os.environ["ALLOOP_METRICS"], "w"))
print("trained on", len(train), file=sys.stderr)
'''


def test_margin_rounds_on_the_probabilities_of_a_user_script(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "train.py").write_text(SCRIPT)
    command = "{python} train.py {train} {predict} {output}"
    pf = write_project(folder, learner={"name": "command", "params": {"command": command}},
                       loop={"initial_size": 20, "batch_size": 15, "max_rounds": 3})
    assert run_cli("import", "-p", str(pf)).returncode == 0
    r = run_cli("run", "-p", str(pf))
    assert r.returncode == 0, r.stdout + r.stderr
    status = json.loads(run_cli("status", "-p", str(pf), "--json").stdout)
    assert status["status"] == "finished" and [x["selected"] for x in status["rounds"]] == [20, 15, 15]
    accs = [x["accuracy"] for x in status["rounds"][1:]] + [status["final_model"]["accuracy"]]
    assert all(a > 0.6 for a in accs), accs  # 8x8 digits, 20-50 labels, held-out 30%
    ws = open_workspace(pf, do_import=False)
    with session_scope(ws.engine) as s:
        rnd = s.exec(select(Round).where(Round.number == 1)).one()
        mv = s.get(ModelVersion, rnd.model_version_id)
        picked = [s.get(Sample, sel.sample_id).key for sel in s.exec(
            select(Selection).where(Selection.round_id == rnd.id).order_by(Selection.rank))]
        before = {s.get(Sample, sel.sample_id).key for sel in s.exec(
            select(Selection).join(Round, Round.id == Selection.round_id).where(Round.number == 0))}
        pool = {smp.key for smp in s.exec(select(Sample).where(Sample.split == "pool"))}
    ws.close()
    assert mv.learner == "command" and mv.metrics["n_train"] == mv.n_labels == 20
    run_dir = folder / ".alloop" / "models" / "round-0001"
    assert "trained on 20" in (run_dir / "stderr.log").read_text()
    # round 1 took the 15 smallest margins of the script's probabilities among the unlabeled pool
    labels = status["labels"]
    rows = [json.loads(x) for x in (run_dir / "predictions.jsonl").read_text().splitlines()]
    cand = [row for row in rows if row["key"] in pool and row["key"] not in before]
    P = np.array([[row["proba"].get(lb, 0.0) for lb in labels] for row in cand])
    scores = margin(P / P.sum(1, keepdims=True))
    best = {cand[i]["key"] for i in np.argsort(-scores, kind="stable")[:15]}
    assert set(picked) == best
