"""Detection projects end to end: real `alloop` processes, real SQLite files, real generated canvases.

The projects are the example's (``examples/detection_ofds``: its alloop.toml and its training
script ``train_detector.py`` run by the ``command`` learner), on a smaller pool generated here
the way ``prepare_pool.py`` does: MNIST digits pasted on canvases, exact COCO ground truth (the
simulated annotator's answers), noisy autolabels (round 0's proposals), a rare class.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import select

from alloop.config import dumps_toml
from alloop.datasets.detection import make_detection_pool
from alloop.datasets.noisy_autolabels import write_autolabels_from_truth
from alloop.pool.importer import in_test_split
from alloop.store.engine import make_engine, session_scope
from alloop.store.models import (
    Annotation,
    ModelVersion,
    Project,
    Round,
    Sample,
    Selection,
    Task,
)
from tests.conftest import run_cli
from tests.integration.snapshot import assert_no_duplicates

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "detection_ofds"
CLASSES = list("0123457")
RARE = "7"
N_IMAGES = 80
TEST_FRACTION = 0.25  # the example's
MIN_SCORE = 0.3  # the example's [proposals] min_score


# ---------------------------------------------------------------------------------------------
# the project and what it left behind
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/``: pool/images/*.png, pool/annotations.json (COCO truth), autolabels.jsonl."""
    data = tmp_path_factory.mktemp("detection") / "data"
    pool = make_detection_pool(data / "pool", n_images=N_IMAGES, source="mnist", class_names=CLASSES,
                               rare_class=RARE, rare_fraction=0.03, objects_per_image=(1, 4), seed=0)
    write_autolabels_from_truth(pool.path, data / "autolabels.jsonl", seed=0, miss_rate=0.1,
                                false_positive_rate=0.1, label_confusion=0.1)
    assert 1 <= pool.class_counts[RARE] <= 0.05 * pool.n_objects  # rare, but there
    return data


def make_project(folder: Path, data: Path, loop: dict[str, Any] | None = None, **sections: Any) -> Path:
    """The example project in ``folder`` (its alloop.toml and train_detector.py, a copy of ``data``).

    ``loop`` updates [loop] (default: 12 images in round 0, 8 per later round, 3 rounds);
    ``sections`` replace whole sections (None removes one).
    """
    folder.mkdir(parents=True)
    shutil.copytree(data, folder / "data")
    shutil.copy(EXAMPLE / "train_detector.py", folder / "train_detector.py")
    cfg = tomllib.loads((EXAMPLE / "alloop.toml").read_text(encoding="utf-8"))
    assert cfg["proposals"]["min_score"] == MIN_SCORE and cfg["pool"]["test_fraction"] == TEST_FRACTION
    cfg["loop"] = {"initial_size": 12, "batch_size": 8, "max_rounds": 3, **(loop or {})}
    for name, value in sections.items():
        if value is None:
            cfg.pop(name, None)
        else:
            cfg[name] = value
    (folder / "alloop.toml").write_text(dumps_toml(cfg), encoding="utf-8")
    return folder


def edit_toml(folder: Path, **sections: Any) -> None:
    cfg = tomllib.loads((folder / "alloop.toml").read_text(encoding="utf-8"))
    cfg.update(sections)
    (folder / "alloop.toml").write_text(dumps_toml(cfg), encoding="utf-8")


def cli(*args: str, folder: Path) -> Any:
    """``alloop <args> -p <folder>`` from inside the folder."""
    return run_cli(*args, "-p", str(folder), cwd=folder, timeout=240)


def ok(r: Any) -> Any:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def flat(text: str) -> str:
    """Text with every run of whitespace as one space (rich wraps long lines)."""
    return " ".join(text.split())


def db(folder: Path) -> dict[str, Any]:
    """Everything the tests compare, read from the project's SQLite file (no timestamps)."""
    engine = make_engine(f"sqlite:///{folder / '.alloop' / 'alloop.db'}")
    try:
        with session_scope(engine) as s:
            samples = list(s.exec(select(Sample).order_by(Sample.id)))
            key = {x.id: x.key for x in samples}
            number = {r.id: r.number for r in s.exec(select(Round))}
            project = s.exec(select(Project)).one()
            picked: dict[int, list[str]] = {}
            for x in s.exec(select(Selection).order_by(Selection.round_id, Selection.rank)):
                picked.setdefault(number[x.round_id], []).append(key[x.sample_id])
            return {
                "status": (project.status, project.finished_reason),
                "labels": list(project.labels),
                "pool": [x.key for x in samples if x.split == "pool" and x.status == "ok"],
                "test": [x.key for x in samples if x.split == "test" and x.status == "ok"],
                "quarantined": [x.key for x in samples if x.status == "quarantined"],
                "hash": {x.key: x.content_hash for x in samples},
                "rounds": [(r.number, r.state, r.attempt, r.last_error)
                           for r in s.exec(select(Round).order_by(Round.number))],
                "picked": picked,
                "selections": sorted((number[x.round_id], x.rank, key[x.sample_id], round(x.score, 6))
                                     for x in s.exec(select(Selection))),
                "tasks": sorted((number[t.round_id], key[t.sample_id], t.external_id) for t in s.exec(select(Task))),
                "annotations": sorted(
                    (key[a.sample_id], a.source_id, a.annotator, a.cancelled, a.valid,
                     json.dumps(a.value, sort_keys=True)) for a in s.exec(select(Annotation))),
                "models": [(m.round_number, m.final, m.n_labels, dict(m.metrics))
                           for m in s.exec(select(ModelVersion).order_by(ModelVersion.id))],
            }
    finally:
        engine.dispose()


def no_duplicates(state: dict[str, Any]) -> None:
    assert_no_duplicates({"selections": state["selections"], "tasks": state["tasks"],
                          "annotations": [(k, src) for k, src, *_ in state["annotations"]]})


def truth(data: Path) -> tuple[list[str], dict[str, list[tuple[str, list[float]]]]]:
    """The ground truth: category names and, by image key, its (label, [x, y, w, h]) boxes."""
    coco = json.loads((data / "pool" / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    file_of = {im["id"]: im["file_name"] for im in coco["images"]}
    boxes: dict[str, list[tuple[str, list[float]]]] = {im["file_name"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        boxes[file_of[a["image_id"]]].append((names[a["category_id"]], [float(v) for v in a["bbox"]]))
    return [c["name"] for c in coco["categories"]], boxes


def coco_boxes(doc: dict[str, Any], key_field: str) -> dict[str, list[tuple[str, list[float]]]]:
    """A COCO document's boxes by image (``key_field``: ``file_name`` or ``alloop_key``)."""
    names = {c["id"]: c["name"] for c in doc["categories"]}
    key_of = {im["id"]: im[key_field] for im in doc["images"]}
    out: dict[str, list[tuple[str, list[float]]]] = {k: [] for k in key_of.values()}
    for a in doc["annotations"]:
        out[key_of[a["image_id"]]].append((names[a["category_id"]], [float(v) for v in a["bbox"]]))
    return out


def same_boxes(got: list[tuple[str, list[float]]], want: list[tuple[str, list[float]]], atol: float, what: str) -> None:
    got, want = sorted(got), sorted(want)
    assert [lb for lb, _ in got] == [lb for lb, _ in want], what
    for (_, g), (_, w) in zip(got, want):
        assert np.allclose(g, w, atol=atol), f"{what}: box {g} != {w}"


def scores(folder: Path, number: int) -> dict[str, np.ndarray]:
    folder = folder / ".alloop" / "rounds" / f"round-{number:04d}" / "scores"
    return {f.stem: np.load(f) for f in folder.glob("*.npy")}


def rows(keys: list[str], labels: list[str], score: np.ndarray, xyxy: np.ndarray) -> list[tuple[Any, ...]]:
    """Proposals as sorted rows (image, label, float32 score, x0, y0, x1, y1)."""
    out = [(k, lb, float(np.float32(s)), *(float(v) for v in b))
           for k, lb, s, b in zip(keys, labels, np.asarray(score, np.float32), np.asarray(xyxy, np.float64))]
    return sorted(out)


def object_rows(folder: Path, number: int, state: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The object proposals a round's score files hold, by image key and label name."""
    z = scores(folder, number)
    with session_scope(engine := make_engine(f"sqlite:///{folder / '.alloop' / 'alloop.db'}")) as s:
        key = dict(s.exec(select(Sample.id, Sample.key)).all())
    engine.dispose()
    image = [key[int(z["sample_ids"][p])] for p in z["obj_image"]]
    assert z["obj_box"].shape == (len(image), 4) and len(z["obj_features"]) == len(image)
    return rows(image, [state["labels"][int(j)] for j in z["obj_label"]], z["obj_score"], z["obj_box"])


def same_rows(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} proposals, expected {len(want)}"
    assert [r[:3] for r in got] == [r[:3] for r in want], what
    np.testing.assert_allclose([r[3:] for r in got], [r[3:] for r in want], atol=1e-3, err_msg=what)


# ---------------------------------------------------------------------------------------------
# 1. the example end to end with its training script
# ---------------------------------------------------------------------------------------------
def test_example_project_end_to_end(tmp_path: Path, pool_data: Path) -> None:
    proj = make_project(tmp_path / "digits", pool_data)
    r = ok(cli("import", folder=proj))
    assert f"{N_IMAGES} added" in r.stdout
    r = ok(cli("run", folder=proj))
    assert "finished: max_rounds reached (3 rounds)" in flat(r.stdout)

    state = db(proj)
    labels, gt = truth(pool_data)
    assert state["labels"] == labels == CLASSES
    assert state["status"] == ("finished", "max_rounds reached (3 rounds)")
    assert [(n, st) for n, st, *_ in state["rounds"]] == [(0, "CLOSED"), (1, "CLOSED"), (2, "CLOSED")]
    assert len(state["pool"]) + len(state["test"]) == N_IMAGES and 0 < len(state["test"]) < N_IMAGES / 2
    # every round picked its budget, nothing twice, only pool images
    assert {n: len(keys) for n, keys in state["picked"].items()} == {0: 12, 1: 8, 2: 8}
    picked = [k for n in range(3) for k in state["picked"][n]]
    assert len(set(picked)) == len(picked) == 28 and set(picked) <= set(state["pool"])
    no_duplicates(state)
    assert len(state["tasks"]) == len(state["annotations"]) == 28

    # `alloop status --json`: the same rounds, the round's model on the labels so far
    status = json.loads(ok(cli("status", "--json", folder=proj)).stdout)
    assert status["status"] == "finished" and status["task"] == "detection"
    assert status["metric"] == "held-out mAP@0.5"
    assert [(x["round"], x["selected"], x["pushed"], x["resolved"], x["labeled"]) for x in status["rounds"]] == [
        (0, 12, 12, 12, 12), (1, 8, 8, 8, 8), (2, 8, 8, 8, 8)]
    assert [x["train_labels"] for x in status["rounds"]] == [0, 12, 20]
    assert status["rounds"][0]["accuracy"] is None
    assert status["samples"] == {"pool": len(state["pool"]), "test": len(state["test"]), "quarantined": 0}
    assert status["final_model"]["n_labels"] == 28

    # models: none in round 0 (no labels), then one per round trained on every label so far
    models = state["models"]
    assert [(m[0], m[1], m[2]) for m in models] == [(1, False, 12), (2, False, 20), (None, True, 28)]
    for (_, _, n_labels, metrics), row in zip(models, [*status["rounds"][1:], status["final_model"]]):
        assert metrics["n_labels"] == n_labels
        assert 0.0 <= metrics["map50"] <= 1.0 and 0.0 <= metrics["map"] <= metrics["map50"]
        assert metrics["n_test_images"] == len(state["test"])
        assert metrics["n_train_images"] == n_labels  # what train_detector.py saw (its metrics.json)
        assert row["accuracy"] == metrics["map50"]
    assert models[-1][3]["map50"] > 0.2  # 28 labeled canvases teach it something about digits

    # the run folders: train.json holds exactly the labeled images so far, predict.json pool + test
    runs = proj / ".alloop" / "models"
    assert sorted(p.name for p in runs.iterdir()) == ["final", "round-0001", "round-0002"]
    for name, n_rounds in (("round-0001", 1), ("round-0002", 2), ("final", 3)):
        train = json.loads((runs / name / "train.json").read_text())
        so_far = [k for n in range(n_rounds) for k in state["picked"][n]]
        assert sorted(im["alloop_key"] for im in train["images"]) == sorted(so_far), name
        assert all(Path(im["file_name"]).is_absolute() and Path(im["file_name"]).exists() for im in train["images"])
        for key, boxes in coco_boxes(train, "alloop_key").items():  # the annotator's boxes: the truth
            same_boxes(boxes, gt[key], 0.02, f"{name}/train.json {key}")
        predict = json.loads((runs / name / "predict.json").read_text())
        assert predict["annotations"] == []
        assert sorted(im["alloop_key"] for im in predict["images"]) == sorted(state["pool"] + state["test"])
        assert (runs / name / "predictions.json").exists() and (runs / name / "predictions.npz").exists()

    # round 0 selected from the autolabel file (no model yet) ...
    pool = set(state["pool"])
    auto = [json.loads(line) for line in (proj / "data" / "autolabels.jsonl").read_text().splitlines() if line]
    auto = [a for a in auto if a["image"] in pool and np.float32(a["score"]) >= np.float32(MIN_SCORE)]
    assert len(auto) > len(pool)  # several objects per image
    want = rows([a["image"] for a in auto], [a["label"] for a in auto], np.array([a["score"] for a in auto]),
                np.array([[x, y, x + w, y + h] for x, y, w, h in (a["box"] for a in auto)]))
    same_rows(object_rows(proj, 0, state), want, "round 0 proposals vs the autolabel file")
    # ... rounds 1 and 2 from the detections of their own model (train_detector.py's predictions)
    for number in (1, 2):
        run = runs / f"round-{number:04d}"
        key_of = {im["id"]: im["alloop_key"] for im in json.loads((run / "predict.json").read_text())["images"]}
        dets = [d for d in json.loads((run / "predictions.json").read_text())
                if key_of[d["image_id"]] in pool and np.float32(d["score"]) >= np.float32(MIN_SCORE)]
        assert dets, f"round {number}: the model detected nothing in the pool"
        want = rows([key_of[d["image_id"]] for d in dets], [labels[d["category_id"] - 1] for d in dets],
                    np.array([d["score"] for d in dets]),
                    np.array([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)]))
        same_rows(object_rows(proj, number, state), want, f"round {number} proposals vs round-{number:04d} predictions")
        assert object_rows(proj, number, state) != object_rows(proj, 0, state)

    # `alloop export`: COCO of exactly the picked images, with the ground-truth boxes
    r = ok(cli("export", "labels.json", folder=proj))
    assert "Exported 28 labeled samples" in flat(r.stdout)
    doc = json.loads((proj / "labels.json").read_text())
    assert [c["name"] for c in doc["categories"]] == labels
    assert sorted(im["file_name"] for im in doc["images"]) == sorted(picked)
    assert all(im["alloop_key"] == im["file_name"] for im in doc["images"])
    exported = coco_boxes(doc, "file_name")
    for key in picked:
        same_boxes(exported[key], gt[key], 0.02, f"export {key}")
    assert len(doc["annotations"]) == sum(len(gt[k]) for k in picked)

    # `alloop report`: the learning curve (labels vs held-out mAP@0.5)
    r = ok(cli("report", folder=proj))
    png = proj / ".alloop" / "report" / "learning_curve.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mAP50" in r.stdout


# ---------------------------------------------------------------------------------------------
# 2. proposals from a YOLO-shaped ONNX detector, cached per image
# ---------------------------------------------------------------------------------------------
S = 64  # the detector's input side: the 128x128 canvases are scaled by 0.5, no padding
ONNX_CLASSES = ["0", "1"]  # project labels, in the model's class order


def export_detector(path: Path) -> Path:
    """A YOLOv8-shaped ONNX model: output (1, 4 + 2, 49), fixed 16-pixel anchors with stride 8.

    Class "0" is scored by the mean brightness of the anchor's left half, class "1" by its
    right half (both in [0, 1]), so bright digits are found and the noisy background is not.
    """
    import torch

    class GridDetector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            corners = [(x, y) for y in range(0, S - 15, 8) for x in range(0, S - 15, 8)]
            masks = torch.zeros(2, len(corners), S * S)
            boxes = torch.zeros(4, len(corners))
            for a, (x, y) in enumerate(corners):
                for c in (0, 1):
                    m = torch.zeros(S, S)
                    m[y : y + 16, x + 8 * c : x + 8 * c + 8] = 1.0 / 128
                    masks[c, a] = m.flatten()
                boxes[:, a] = torch.tensor([x + 8.0, y + 8.0, 16.0, 16.0])
            self.register_buffer("masks", masks.reshape(-1, S * S))
            self.register_buffer("boxes", boxes)
            self.n = len(corners)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            means = x[:, 0].reshape(1, S * S) @ self.masks.T  # (1, 2 * anchors)
            return torch.cat([self.boxes, means.reshape(2, self.n)], dim=0).unsqueeze(0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(GridDetector().eval(), (torch.zeros(1, 3, S, S),), str(path), dynamo=False,
                          input_names=["images"], output_names=["output0"])
    return path


def test_onnx_proposals_in_the_loop_are_cached(tmp_path: Path, pool_data: Path) -> None:
    from alloop.detection.onnx_yolo import OnnxYoloDetector

    min_score, iou = 0.25, 0.45
    proj = make_project(
        tmp_path / "onnx", pool_data, loop={"max_rounds": 2}, learner=None,  # detection default: no model
        proposals={"source": "onnx", "path": "detector.onnx", "classes": ONNX_CLASSES, "input_size": S,
                   "min_score": min_score, "iou": iou},
    )
    export_detector(proj / "detector.onnx")
    ok(cli("import", folder=proj))
    r = ok(cli("run", "--rounds", "1", folder=proj))
    out = flat(r.stdout)
    assert "round 0: no model (learner 'none')" in out
    state = db(proj)
    assert [(n, st) for n, st, *_ in state["rounds"]] == [(0, "CLOSED")] and state["status"][0] == "active"
    assert len(state["picked"][0]) == 12

    # the score files hold what the detector finds in the pool images, nothing else
    images = pool_data / "pool" / "images"
    found = OnnxYoloDetector(proj / "detector.onnx", ONNX_CLASSES, input_size=S, conf=min_score, iou=iou).detect(
        [images / k for k in state["pool"]], keys=state["pool"]).above(min_score)
    assert len(found) > 12 and len(set(found.image.tolist())) >= 12
    assert set(found.label.tolist()) == set(ONNX_CLASSES)
    want = rows(found.image.tolist(), found.label.tolist(), found.score, found.xyxy())
    round0 = object_rows(proj, 0, state)
    same_rows(round0, want, "round 0 proposals vs the ONNX detector")
    assert f"({len(want)} object proposals)" in out

    # one cache line per pool image (keyed by content), none for held-out images
    caches = list((proj / ".alloop" / "cache" / "proposals").glob("onnx-*.jsonl"))
    assert len(caches) == 1
    before = caches[0].read_bytes()
    lines = [json.loads(line) for line in before.decode().splitlines() if line.strip()]
    assert len(lines) == len(state["pool"])
    assert sorted(x["content_hash"] for x in lines) == sorted(state["hash"][k] for k in state["pool"])

    # the second round reuses the cache: same proposals, the file does not grow or change
    r = ok(cli("run", folder=proj))
    state = db(proj)
    assert state["status"] == ("finished", "max_rounds reached (2 rounds)")
    assert {n: len(k) for n, k in state["picked"].items()} == {0: 12, 1: 8}
    no_duplicates(state)
    assert list((proj / ".alloop" / "cache" / "proposals").glob("onnx-*.jsonl")) == caches
    assert caches[0].read_bytes() == before
    same_rows(object_rows(proj, 1, state), round0, "round 1 proposals vs round 0's")
    assert state["models"] == []  # learner 'none' trains nothing


# ---------------------------------------------------------------------------------------------
# 3. errors: a clear message, nothing lost
# ---------------------------------------------------------------------------------------------
def test_malformed_autolabel_line_names_file_and_line(tmp_path: Path, pool_data: Path) -> None:
    proj = make_project(tmp_path / "p", pool_data, loop={"max_rounds": 1})
    path = proj / "data" / "autolabels.jsonl"
    good = path.read_text()
    lines = good.splitlines()
    lines[6] = '{"image": "000003.png", "box": [10, 10, 20], "label": "3", "score": 0.9}'  # line 7: 3 numbers
    path.write_text("\n".join(lines) + "\n")
    ok(cli("import", folder=proj))
    r = cli("run", folder=proj)
    assert r.returncode == 2, r.stderr
    err = r.stderr
    assert f"{path}, line 7:" in err and "'box' must be a list of 4 numbers" in err, err
    assert "Traceback" not in err
    state = db(proj)
    assert state["selections"] == [] and state["tasks"] == [] and state["annotations"] == []
    # a user error: no attempt used
    assert [(n, st, attempt) for n, st, attempt, _ in state["rounds"]] == [(0, "TRAINED", 0)]

    path.write_text(good)  # fixed: the run goes on from where it stopped
    ok(cli("run", folder=proj))
    state = db(proj)
    assert state["status"][0] == "finished" and len(state["picked"][0]) == 12 and len(state["annotations"]) == 12


FAILING_TRAINER = """\
import sys
print("loading model...")
print("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
sys.exit(1)
"""


def test_failing_training_command_then_fix_and_retry(tmp_path: Path, pool_data: Path) -> None:
    learner = {"name": "command", "params": {"command": "{python} fail_train.py", "timeout_s": 120}}
    proj = make_project(tmp_path / "p", pool_data, loop={"max_rounds": 2, "max_attempts": 2}, learner=learner)
    (proj / "fail_train.py").write_text(FAILING_TRAINER)
    ok(cli("import", folder=proj))

    r = cli("run", folder=proj)  # round 0 needs no model; round 1 trains on its labels and fails
    assert r.returncode == 2, r.stdout + r.stderr
    assert "CUDA out of memory" in flat(r.stderr) and "exited with status 1" in flat(r.stderr)
    assert "Round 1, attempt 1 of 2 ([loop] max_attempts)" in flat(r.stderr) and "`alloop run` again" in flat(r.stderr)
    assert "Traceback" not in r.stderr
    state = db(proj)
    assert [(n, st, attempt) for n, st, attempt, _ in state["rounds"]] == [(0, "CLOSED", 0), (1, "CREATED", 1)]
    assert "CUDA out of memory" in state["rounds"][1][3]
    labeled = state["annotations"]
    assert len(labeled) == 12 and list(state["picked"]) == [0]
    stderr_log = proj / ".alloop" / "models" / "round-0001" / "stderr.log"
    assert "CUDA out of memory" in stderr_log.read_text()

    r = ok(cli("status", folder=proj))
    assert "round 1 last error (attempt 1):" in flat(r.stdout) and "CUDA out of memory" in flat(r.stdout)

    r = cli("run", folder=proj)  # the second failure uses up max_attempts: the round is FAILED
    assert r.returncode == 2 and "CUDA out of memory" in flat(r.stderr)
    assert "Round 1 failed 2 times and is now FAILED" in flat(r.stderr) and "`alloop retry`" in flat(r.stderr)
    status = json.loads(ok(cli("status", "--json", folder=proj)).stdout)
    assert status["rounds"][1]["state"] == "FAILED" and "CUDA out of memory" in status["rounds"][1]["last_error"]

    edit_toml(proj, learner={"name": "command", "params": {"command": "{python} train_detector.py", "timeout_s": 120}})
    r = cli("run", folder=proj)  # fixed, but a FAILED round waits for `alloop retry`
    assert r.returncode == 2 and "FAILED" in r.stderr and "alloop retry" in flat(r.stderr)
    assert db(proj)["annotations"] == labeled
    r = ok(cli("retry", folder=proj))
    assert "Round 1 is back in CREATED" in flat(r.stdout)
    ok(cli("run", folder=proj))

    state = db(proj)
    assert state["status"] == ("finished", "max_rounds reached (2 rounds)")
    assert [(n, st, attempt, err) for n, st, attempt, err in state["rounds"]] == [
        (0, "CLOSED", 0, None), (1, "CLOSED", 0, None)]
    assert {n: len(k) for n, k in state["picked"].items()} == {0: 12, 1: 8}
    assert set(labeled) <= set(state["annotations"]) and len(state["annotations"]) == 20  # nothing lost
    no_duplicates(state)
    assert [(m[0], m[2]) for m in state["models"]] == [(1, 12), (None, 20)]
    assert "CUDA" not in stderr_log.read_text()  # the fixed command's run replaced the failed one's logs


def test_corrupt_png_is_quarantined_and_the_run_finishes(tmp_path: Path, pool_data: Path) -> None:
    proj = make_project(tmp_path / "p", pool_data, loop={"max_rounds": 2})
    auto = {json.loads(line)["image"] for line in (proj / "data" / "autolabels.jsonl").read_text().splitlines()}
    broken = next(k for k in sorted(auto) if not in_test_split(0, k, TEST_FRACTION))  # a pool image with proposals
    (proj / "data" / "pool" / "images" / broken).write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    r = ok(cli("import", folder=proj))
    assert f"{N_IMAGES - 1} added" in r.stdout and "1 quarantined" in r.stdout and broken in r.stdout
    ok(cli("run", folder=proj))
    state = db(proj)
    assert state["status"][0] == "finished" and state["quarantined"] == [broken]
    assert broken not in state["pool"] + state["test"]
    picked = [k for keys in state["picked"].values() for k in keys]
    assert len(picked) == len(set(picked)) == 20 and broken not in picked
    predict = json.loads((proj / ".alloop" / "models" / "round-0001" / "predict.json").read_text())
    assert len(predict["images"]) == N_IMAGES - 1 and broken not in {im["alloop_key"] for im in predict["images"]}
    assert object_rows(proj, 0, state)  # round 0 selected from the autolabels of the readable images
    assert broken not in {row[0] for row in object_rows(proj, 0, state)}
    assert len(scores(proj, 0)["sample_ids"]) == len(state["pool"])
    ok(cli("export", "labels.json", folder=proj))
    assert len(json.loads((proj / "labels.json").read_text())["images"]) == 20


def test_onnx_cache_line_cut_by_a_kill_is_detected_again(tmp_path: Path, pool_data: Path) -> None:
    proj = make_project(
        tmp_path / "onnx", pool_data, loop={"max_rounds": 2}, learner=None,
        proposals={"source": "onnx", "path": "detector.onnx", "classes": ONNX_CLASSES, "input_size": S,
                   "min_score": 0.25},
    )
    export_detector(proj / "detector.onnx")
    ok(cli("import", folder=proj))
    ok(cli("run", "--rounds", "1", folder=proj))
    (cache,) = (proj / ".alloop" / "cache" / "proposals").glob("onnx-*.jsonl")
    whole = cache.read_bytes()
    cache.write_bytes(whole.rstrip(b"\n")[:-40])  # the last record cut mid-line, as by a kill
    r = ok(cli("run", folder=proj))
    state = db(proj)
    assert state["status"][0] == "finished" and "line" in r.stderr and "detecting that image again" in flat(r.stderr)
    same_rows(object_rows(proj, 1, state), object_rows(proj, 0, state), "round 1 proposals vs round 0's")
    lines = [x for x in cache.read_text().splitlines() if x.strip()]
    def parsed(line: str) -> Any:
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            return None

    records = [r for r in map(parsed, lines) if r is not None]
    assert len(records) == len(lines) - 1  # the cut line stays, skipped; its image was appended again
    assert sorted({x["content_hash"] for x in records}) == sorted(state["hash"][k] for k in state["pool"])


def test_model_proposals_without_a_model_are_refused(tmp_path: Path, pool_data: Path) -> None:
    proj = make_project(tmp_path / "p", pool_data, learner=None,
                        proposals={"source": "model", "path": "data/autolabels.jsonl"})
    ok(cli("import", folder=proj))
    r = cli("run", folder=proj)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "source = \"model\" takes the detections of the project's model" in flat(r.stderr)
    assert db(proj)["rounds"] == []


def test_ofds_without_proposals_is_refused(tmp_path: Path, pool_data: Path) -> None:
    proj = make_project(tmp_path / "p", pool_data, proposals=None)
    ok(cli("import", folder=proj))
    r = cli("run", folder=proj)
    assert r.returncode == 2, r.stdout + r.stderr
    err = flat(r.stderr)
    assert "'ofds' selects from object proposals" in err and "no [proposals] section" in err, err
    assert "Traceback" not in r.stderr
    assert db(proj)["rounds"] == []  # refused before any work


def test_proposals_naming_no_pool_image(tmp_path: Path, pool_data: Path) -> None:
    proj = make_project(tmp_path / "p", pool_data, loop={"max_rounds": 1}, learner=None,
                        proposals={"source": "file", "path": "data/wrong.jsonl", "min_score": MIN_SCORE})
    lines = []
    for line in (proj / "data" / "autolabels.jsonl").read_text().splitlines():
        a = json.loads(line)
        lines.append(json.dumps({**a, "image": f"pool/images/{a['image']}"}))  # relative to the wrong folder
    (proj / "data" / "wrong.jsonl").write_text("\n".join(lines) + "\n")
    ok(cli("import", folder=proj))
    r = cli("run", folder=proj)
    assert r.returncode == 2, r.stdout + r.stderr
    err = flat(r.stderr)
    assert "wrong.jsonl" in err and "names a pool image" in err, err
    assert "Image keys must be the pool's keys" in err and "'pool/images/000000.png'" in err
    state = db(proj)
    assert state["selections"] == [] and state["tasks"] == []


# ---------------------------------------------------------------------------------------------
# 4. crash safety: killed between push and commit, then resumed
# ---------------------------------------------------------------------------------------------
KILL_POINTS = ["0:after_push", "1:before_commit:PUSHED", "2:before_commit:TRAINED", "2:after_push"]


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    """What an interrupted run must share with an uninterrupted one (model timings left out)."""
    out = {k: state[k] for k in ("status", "pool", "test", "picked", "selections", "tasks", "annotations")}
    out["rounds"] = [(n, st) for n, st, *_ in state["rounds"]]
    out["models"] = [(n, final, n_labels, {k: m[k] for k in ("map", "map50", "map75", "n_labels", "n_detections")})
                     for n, final, n_labels, m in state["models"]]
    return out


def test_killed_between_push_and_commit_then_resumed(tmp_path: Path, pool_data: Path) -> None:
    ref = make_project(tmp_path / "ref", pool_data)
    ok(cli("import", folder=ref))
    ok(cli("run", folder=ref))
    reference = comparable(db(ref))
    assert reference["status"][0] == "finished" and len(reference["annotations"]) == 28

    proj = make_project(tmp_path / "killed", pool_data)
    ok(cli("import", folder=proj))
    for point in KILL_POINTS:
        r = run_cli("run", "-p", str(proj), cwd=proj, env={"ALLOOP_TEST_KILL_AT": point}, timeout=240)
        assert r.returncode == -signal.SIGKILL, f"{point}: exit {r.returncode}\n{r.stderr}"
        state = db(proj)
        no_duplicates(state)
        number, where = int(point.split(":")[0]), point.split(":", 1)[1]
        rnd = next(x for x in state["rounds"] if x[0] == number)
        if where in ("after_push", "before_commit:PUSHED"):
            # the annotator got the tasks, the database did not: the round is still SELECTED
            assert rnd[1] == "SELECTED", point
            assert [t for t in state["tasks"] if t[0] == number] == [], point
            assert len(state["picked"][number]) == (12 if number == 0 else 8)
        else:
            assert rnd[1] == "CREATED", point
            assert (proj / ".alloop" / "models" / f"round-{number:04d}" / "predictions.npz").exists()
        # the labels of earlier rounds are all there, once
        assert len(state["annotations"]) == sum(len(state["picked"][n]) for n in range(number))
    ok(cli("run", folder=proj))
    final = db(proj)
    no_duplicates(final)
    assert comparable(final) == reference


def test_simulate_refuses_detection_with_the_way_out(tmp_path: Path, pool_data: Path) -> None:
    proj = make_project(tmp_path / "p", pool_data)
    ok(cli("import", folder=proj))
    r = cli("simulate", "--seeds", "1", folder=proj)
    assert r.returncode == 2 and "examples/detection_ofds/run.sh" in flat(r.stderr), r.stderr


def test_probability_strategies_are_refused_for_detection(tmp_path: Path, pool_data: Path) -> None:
    proj = make_project(tmp_path / "p", pool_data, strategy={"name": "margin"})
    ok(cli("import", folder=proj))
    r = cli("run", folder=proj)
    assert r.returncode == 2 and "[strategy] strategy 'margin' ranks images by one class distribution" in flat(r.stderr)
    assert db(proj)["rounds"] == []
