"""The ``command`` learner: real scripts run in real processes on exported files.

Scripts are written into ``tmp_path`` and run with this interpreter; the detection round trip
runs the example detector ``examples/detection_ofds/train_detector.py`` on a generated pool.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alloop import registry
from alloop.detection.boxes import box_iou
from alloop.errors import ConfigError, LearnerError
from alloop.learners.command import CommandLearner, CommandParams, ExportItem
from alloop.protocols import ExternalLearner
from tests.helpers.images import write_digit_folders
from tests.helpers.waiting import SAFETY_NET_S, wait_until

PY = sys.executable
DETECTOR = Path(__file__).resolve().parents[3] / "examples" / "detection_ofds" / "train_detector.py"


def script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def learner(*command: str, **params) -> CommandLearner:
    return CommandLearner.from_params({"command": list(command), **params})


#: Copies the file named by argv[1] to argv[2] (a fixed "prediction" for reader tests).
COPY = """
    import shutil, sys
    shutil.copyfile(sys.argv[1], sys.argv[2])
"""


def text_items(n: int, prefix: str = "t") -> list[ExportItem]:
    return [ExportItem(f"{prefix}{i}", {"text": f"text number {i}"}, label="a" if i % 2 else "b") for i in range(n)]


def run_copy(tmp_path: Path, content: str, *, labels=("a", "b", "c"), n_predict=3, metrics: str | None = None):
    """Run a command that writes ``content`` as predictions.jsonl (and ``metrics`` as metrics.json)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    copy = script(tmp_path, "copy.py", COPY)
    (tmp_path / "given.jsonl").write_text(content)
    command = [PY, str(copy), str(tmp_path / "given.jsonl"), "{output}"]
    if metrics is not None:
        (tmp_path / "given_metrics.json").write_text(metrics)
        command = [
            PY,
            "-c",
            "import shutil, sys; [shutil.copyfile(a, b) for a, b in (sys.argv[1:3], sys.argv[3:5])]",
            str(tmp_path / "given.jsonl"),
            "{output}",
            str(tmp_path / "given_metrics.json"),
            "{metrics}",
        ]
    return learner(*command).run(
        task="text",
        labels=list(labels),
        train=[ExportItem(f"t{i}", {"text": f"text {i}"}, label=labels[i % 2]) for i in range(4)],
        predict=text_items(n_predict, "p"),
        run_dir=tmp_path / "run",
        seed=0,
    )


# ---------------------------------------------------------------------------------------------
# classification / text
# ---------------------------------------------------------------------------------------------
TRAIN_DIGITS = """
    # a user's training script: logistic regression on the pixels of the exported images
    import json, os
    import numpy as np
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    def rows(path):
        return [json.loads(line) for line in open(path) if line.strip()]

    def pixels(row):
        return np.asarray(Image.open(row["path"]).convert("L"), dtype=float).ravel() / 255

    train, predict = rows(os.environ["ALLOOP_TRAIN"]), rows(os.environ["ALLOOP_PREDICT"])
    labels = json.load(open(os.environ["ALLOOP_LABELS"]))
    clf = LogisticRegression(max_iter=2000, random_state=int(os.environ["ALLOOP_SEED"]))
    clf.fit(np.stack([pixels(r) for r in train]), [r["label"] for r in train])
    proba = clf.predict_proba(np.stack([pixels(r) for r in predict]))
    with open(os.environ["ALLOOP_OUTPUT"], "w") as out:
        for row, p in zip(predict, proba):
            out.write(json.dumps({"key": row["key"], "proba": dict(zip(clf.classes_.tolist(), p.tolist()))}) + "\\n")
    json.dump({"train_accuracy": clf.score(np.stack([pixels(r) for r in train]), [r["label"] for r in train]),
               "n_train": len(train)}, open(os.environ["ALLOOP_METRICS"], "w"))
"""


def test_classification_round_trip_learns_real_digits(tmp_path: Path) -> None:
    folder = write_digit_folders(tmp_path / "digits", classes=3, per_class=30, size=16)
    items = [(f"{d}/{p.name}", str(p), str(d)) for d in range(3) for p in sorted((folder / str(d)).iterdir())]
    rng = np.random.default_rng(0)
    rng.shuffle(items)
    train = [ExportItem(k, {"path": p}, label=y) for k, p, y in items[:45]]
    predict = [ExportItem(k, {"path": p}) for k, p, _ in items[45:]]
    truth = [y for _, _, y in items[45:]]
    labels = ["2", "0", "1"]  # not sorted: columns must follow this order, not the script's

    result = learner(PY, str(script(tmp_path, "train.py", TRAIN_DIGITS))).run(
        task="classification",
        labels=labels,
        train=train,
        predict=predict,
        run_dir=tmp_path / "run",
        seed=3,
    )
    assert result.task == "classification" and result.detections is None
    assert result.keys == tuple(it.key for it in predict)
    assert result.proba.shape == (45, 3) and result.proba.dtype == np.float32
    np.testing.assert_allclose(result.proba.sum(axis=1), 1.0, atol=1e-5)
    predicted = [labels[j] for j in result.proba.argmax(axis=1)]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth)])
    assert accuracy > 0.85  # chance is 1/3
    assert result.metrics == {"train_accuracy": pytest.approx(result.metrics["train_accuracy"]), "n_train": 45.0}
    assert result.metrics["train_accuracy"] > 0.9
    assert result.seconds > 0 and result.run_dir == tmp_path / "run"
    lines = [json.loads(x) for x in (tmp_path / "run" / "train.jsonl").read_text().splitlines()]
    assert lines[0] == {"key": train[0].key, "path": train[0].data["path"], "label": train[0].label}
    assert json.loads((tmp_path / "run" / "labels.json").read_text()) == labels


def test_label_only_lines_and_proba_lists(tmp_path: Path) -> None:
    result = run_copy(
        tmp_path,
        (
            '{"key": "p2", "label": "b", "score": 0.7}\n'
            "\n"  # blank lines are skipped
            '{"key": "p0", "label": "a"}\n'
            '{"key": "p1", "proba": [2, 1, 1]}'
        )
        + "\n",
    )
    assert result.keys == ("p0", "p1", "p2")
    np.testing.assert_allclose(result.proba, [[1, 0, 0], [0.5, 0.25, 0.25], [0.15, 0.7, 0.15]], atol=1e-6)
    assert result.metrics == {}


REPORT = """
    import json, os, sys
    seen = {"argv": sys.argv[1:], "cwd": os.getcwd(),
            "env": {k: v for k, v in os.environ.items() if k.startswith(("ALLOOP_", "MY_"))}}
    json.dump(seen, open(os.path.join(os.environ["ALLOOP_RUN_DIR"], "seen.json"), "w"))
    with open(os.environ["ALLOOP_OUTPUT"], "w") as out:
        for line in open(os.environ["ALLOOP_PREDICT"]):
            out.write(json.dumps({"key": json.loads(line)["key"], "label": "a"}) + "\\n")
"""


def test_placeholders_environment_and_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SECRET_TOKEN", "s3cret")  # inherited, never in the project file
    report = script(tmp_path, "report.py", REPORT)
    command = (
        f"{shlex.quote(PY)} {shlex.quote(str(report))} " + "--train {train} --seed={seed} x{task}y {labels} {{literal}}"
    )
    run_dir = tmp_path / "a" / "run"
    lrn = CommandLearner.from_params({"command": command, "env": {"MY_FLAG": "on"}})
    lrn.run(task="text", labels=["a", "b"], train=text_items(2), predict=text_items(2, "p"), run_dir=run_dir, seed=42)
    seen = json.loads((run_dir / "seen.json").read_text())
    assert seen["argv"] == [
        "--train",
        str(run_dir / "train.jsonl"),
        "--seed=42",
        "xtexty",
        str(run_dir / "labels.json"),
        "{literal}",
    ]
    assert Path(seen["cwd"]).resolve() == run_dir.resolve()
    env = seen["env"]
    assert env["MY_SECRET_TOKEN"] == "s3cret" and env["MY_FLAG"] == "on"
    expected = {
        "TRAIN": "train.jsonl",
        "PREDICT": "predict.jsonl",
        "OUTPUT": "predictions.jsonl",
        "METRICS": "metrics.json",
        "LABELS": "labels.json",
    }
    for name, file in expected.items():
        assert env[f"ALLOOP_{name}"] == str(run_dir / file)
    assert env["ALLOOP_RUN_DIR"] == str(run_dir) and env["ALLOOP_TASK"] == "text" and env["ALLOOP_SEED"] == "42"
    assert (run_dir / "predict.jsonl").read_text().splitlines()[1] == '{"key": "p1", "text": "text number 1"}'

    # cwd given: the command runs there (and relative paths in the command start there)
    work = tmp_path / "work"
    work.mkdir()
    (work / "report.py").write_text(report.read_text())
    CommandLearner.from_params({"command": [PY, "report.py"], "cwd": str(work)}).run(
        task="text",
        labels=["a", "b"],
        train=text_items(2),
        predict=text_items(2, "p"),
        run_dir=run_dir,
        seed=0,
    )
    assert Path(json.loads((run_dir / "seen.json").read_text())["cwd"]).resolve() == work.resolve()


def test_stale_predictions_and_metrics_are_removed_before_a_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "predictions.jsonl").write_text('{"key": "p0", "label": "a"}\n')
    (run_dir / "metrics.json").write_text('{"accuracy": 1.0}')
    with pytest.raises(LearnerError, match=r"wrote no predictions.*predictions\.jsonl.*\$ALLOOP_OUTPUT"):
        learner(PY, "-c", "pass").run(
            task="text",
            labels=["a", "b"],
            train=text_items(2),
            predict=text_items(1, "p"),
            run_dir=run_dir,
            seed=0,
        )
    assert not (run_dir / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digit_pool(tmp_path_factory: pytest.TempPathFactory):
    """80 canvases of MNIST digits (0-3 per image) and their exact truth."""
    from alloop.datasets.detection import make_detection_pool

    pool = make_detection_pool(tmp_path_factory.mktemp("pool"), n_images=80, objects_per_image=(0, 3), seed=4)
    coco = json.loads(pool.path.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    truth: dict[str, list[tuple[list[float], str]]] = {im["file_name"]: [] for im in coco["images"]}
    key_of = {im["id"]: im["file_name"] for im in coco["images"]}
    for a in coco["annotations"]:
        truth[key_of[a["image_id"]]].append((a["bbox"], names[a["category_id"]]))
    return pool, truth


def detection_items(pool, truth, keys, with_boxes: bool) -> list[ExportItem]:
    items = []
    for n, key in enumerate(keys):
        # every other item without its size: the learner reads it from the file
        data = {"path": str(pool.images_dir / key)} | ({"width": 128, "height": 128} if n % 2 else {})
        boxes = [{"bbox": b, "label": lab} for b, lab in truth[key]] if with_boxes else None
        items.append(ExportItem(key, data, boxes=boxes))
    return items


def test_detection_round_trip_with_the_example_detector(tmp_path: Path, digit_pool) -> None:
    pool, truth = digit_pool
    keys = sorted(truth)
    train = detection_items(pool, truth, keys[:55], with_boxes=True)
    predict = detection_items(pool, truth, keys[55:], with_boxes=False)
    labels = list(pool.class_names)
    result = learner(PY, str(DETECTOR)).run(
        task="detection",
        labels=labels,
        train=train,
        predict=predict,
        run_dir=tmp_path / "run",
        seed=0,
    )
    # the exported training file: COCO with absolute paths, sample keys, every image kept
    coco = json.loads((tmp_path / "run" / "train.json").read_text())
    assert [im["alloop_key"] for im in coco["images"]] == keys[:55]
    assert coco["images"][0]["file_name"] == str(pool.images_dir / keys[0])
    assert all(im["width"] == 128 and im["height"] == 128 for im in coco["images"])
    assert any(not truth[k] for k in keys[:55])  # an image with nothing to detect is exported too
    assert len(coco["annotations"]) == sum(len(truth[k]) for k in keys[:55])
    assert [c["name"] for c in coco["categories"]] == labels and coco["categories"][0]["id"] == 1
    assert json.loads((tmp_path / "run" / "predict.json").read_text())["annotations"] == []

    assert result.proba is None and result.keys == tuple(keys[55:])
    found = result.detections
    assert len(found) > 0 and set(found.image.tolist()) <= set(keys[55:])
    assert (found.box[:, :2] >= 0).all() and (found.box[:, :2] + found.box[:, 2:] <= 128).all()
    assert ((found.score > 0) & (found.score <= 1)).all()
    best, correct = [], []
    for key in keys[55:]:
        mine = found.of_image(key)
        for box, label in truth[key]:
            iou = box_iou([box], mine.box)[0] if len(mine) else np.zeros(1)
            best.append(iou.max())
            if iou.max() >= 0.5:
                correct.append(mine.label[iou.argmax()] == label)
    # measured on this pool: mean best IoU 0.77, 31/35 objects found (IoU >= 0.5), 21/31 right classes
    assert np.mean(best) > 0.65
    assert np.mean(np.array(best) >= 0.5) > 0.75
    assert np.mean(correct) > 0.4  # chance: 0.1
    assert result.metrics["n_train_objects"] == sum(len(truth[k]) for k in keys[:55])
    assert result.metrics["proposal_recall_train"] > 0.85


def write_images(folder: Path, n: int = 2) -> list[ExportItem]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        Image.new("L", (40, 30)).save(folder / f"im{i}.png")
        items.append(ExportItem(f"im{i}.png", {"path": str(folder / f"im{i}.png")}))
    return items


def run_detection_copy(tmp_path: Path, content: str, name: str):
    predict = write_images(tmp_path / "images")
    copy = script(tmp_path, "copy.py", COPY)
    (tmp_path / "given").write_text(content)
    return learner(PY, str(copy), str(tmp_path / "given"), "{run_dir}/" + name).run(
        task="detection",
        labels=["cat", "dog"],
        train=[],
        predict=predict,
        run_dir=tmp_path / "run",
        seed=0,
    )


def test_detection_reads_coco_results_jsonl_and_coco_objects(tmp_path: Path) -> None:
    results = [
        {"image_id": 2, "category_id": 2, "bbox": [30, 20, 20, 20], "score": 0.9},  # clipped to 40x30
        {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
    ]
    found = run_detection_copy(tmp_path / "a", json.dumps(results), "predictions.json").detections
    assert found.image.tolist() == ["im0.png", "im1.png"]  # in predict order
    assert found.label.tolist() == ["cat", "dog"]
    np.testing.assert_allclose(found.box, [[1, 2, 3, 4], [30, 20, 10, 10]])
    np.testing.assert_allclose(found.score, [0.5, 0.9])

    images = tmp_path / "b" / "images"
    lines = [
        {"image": "im1.png", "box": [0, 0, 5, 5], "label": "dog", "score": 0.3},
        {"image": str(images / "im0.png"), "bbox": [2, 2, 5, 5], "label": "cat"},
    ]
    found = run_detection_copy(tmp_path / "b", "\n".join(map(json.dumps, lines)), "predictions.jsonl").detections
    assert found.image.tolist() == ["im0.png", "im1.png"] and found.label.tolist() == ["cat", "dog"]

    coco = {
        "images": [{"id": 7, "file_name": str(tmp_path / "c" / "images" / "im1.png"), "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 1, 4, 4], "score": 0.8}],
        "categories": [{"id": 3, "name": "dog"}],
    }
    found = run_detection_copy(tmp_path / "c", json.dumps(coco), "predictions.json").detections
    assert found.image.tolist() == ["im1.png"] and found.label.tolist() == ["dog"]

    assert len(run_detection_copy(tmp_path / "d", "[]", "predictions.json").detections) == 0


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        (
            (
                '[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]},'
                ' {"image_id": 3, "category_id": 1, "bbox": [0, 0, 5, 5]}]'
            ),
            "predictions.json",
            r"entry \[1\]: image_id 3 is not an image id of the predict file \(1\.\.2\)",
        ),
        (
            '[{"image_id": 1, "category_id": 5, "bbox": [0, 0, 5, 5]}]',
            "predictions.json",
            r"entry \[0\]: category_id 5.*'cat', 'dog'",
        ),
        (
            '[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 5]}]',
            "predictions.json",
            r"entry \[0\]: 'bbox' must be",
        ),
        (
            '[{"image_id": 1, "category_id": 1, "bbox": [50, 0, 5, 5]}]',
            "predictions.json",
            r"entry \[0\]: bbox .* lies outside its 40x30 image",
        ),
        (
            '[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 3}]',
            "predictions.json",
            r"entry \[0\]: 'score'",
        ),
        (
            (
                '{"image": "im0.png", "box": [0, 0, 5, 5], "label": "cat"}\n'
                '{"image": "im9.png", "box": [0, 0, 5, 5], "label": "cat"}'
            ),
            "predictions.jsonl",
            r"line 2: image 'im9.png' is not one of",
        ),
        (
            '{"image": "im0.png", "box": [0, 0, 5, 5], "label": "cta"}',
            "predictions.jsonl",
            r"line 1: label 'cta'.*Did you mean 'cat'",
        ),
    ],
)
def test_detection_output_errors_name_the_entry(tmp_path: Path, content: str, name: str, expected: str) -> None:
    with pytest.raises(LearnerError, match=expected):
        run_detection_copy(tmp_path, content, name)


# ---------------------------------------------------------------------------------------------
# failures of the command
# ---------------------------------------------------------------------------------------------
def test_a_failing_command_reports_its_status_and_stderr(tmp_path: Path) -> None:
    fail = script(
        tmp_path,
        "fail.py",
        """
        import sys
        print("loading data", file=sys.stderr)
        print("CUDA out of memory: tried to allocate 20 GiB", file=sys.stderr)
        sys.exit(3)
    """,
    )
    with pytest.raises(LearnerError) as e:
        learner(PY, str(fail)).run(
            task="text",
            labels=["a", "b"],
            train=text_items(2),
            predict=text_items(1, "p"),
            run_dir=tmp_path / "run",
            seed=0,
        )
    msg = str(e.value)
    assert "exited with status 3" in msg and "CUDA out of memory: tried to allocate 20 GiB" in msg
    assert "loading data" in msg and str(tmp_path / "run") in msg
    assert "CUDA out of memory" in (tmp_path / "run" / "stderr.log").read_text()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie is dead, only not reaped yet


def test_timeout_stops_the_command_and_what_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeper = script(
        tmp_path,
        "sleep.py",
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        run_dir = os.environ["ALLOOP_RUN_DIR"]
        with open(os.path.join(run_dir, "pids.tmp"), "w") as fh:
            fh.write(f"{{os.getpid()}} {{child.pid}}")
        os.replace(os.path.join(run_dir, "pids.tmp"), os.path.join(run_dir, "pids"))
        time.sleep({SAFETY_NET_S})  # without the timeout: exits 0 with no output, a different error
    """,
    )
    # handshake: the learner's timed wait starts once the command has started its child, so however
    # slow the start, the timeout (1 s) stops a command that has something to leave behind
    pids_file = tmp_path / "run" / "pids"
    real_wait = subprocess.Popen.wait

    def wait_once_started(proc: subprocess.Popen, timeout: float | None = None) -> int:
        if timeout is not None:
            wait_until(pids_file.exists, "the command to start its child",
                       alive=lambda: proc.poll() is not None and f"the command exited ({proc.returncode})")
        return real_wait(proc, timeout)

    monkeypatch.setattr(subprocess.Popen, "wait", wait_once_started)
    try:
        with pytest.raises(LearnerError, match=r"timeout_s = 1 s.*Raise `timeout_s`"):
            learner(PY, str(sleeper), timeout_s=1).run(
                task="text",
                labels=["a", "b"],
                train=text_items(2),
                predict=text_items(1, "p"),
                run_dir=tmp_path / "run",
                seed=0,
            )
        pids = [int(p) for p in pids_file.read_text().split()]
        # killed: gone (or zombies) at once; the safety net is far below their own sleeps
        wait_until(lambda: not any(_alive(p) for p in pids), "the command and its child to be gone", timeout=60)
    finally:
        for pid in [int(p) for p in pids_file.read_text().split()] if pids_file.exists() else []:
            try:  # what a broken timeout left behind
                if _alive(pid) and "sleep" in Path(f"/proc/{pid}/cmdline").read_text():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_program_not_found(tmp_path: Path) -> None:
    with pytest.raises(
        LearnerError, match=r"program 'no-such-trainer-xyz' was not found.*`command` in the \[learner\] params"
    ):
        learner("no-such-trainer-xyz", "{train}").run(
            task="text",
            labels=["a", "b"],
            train=text_items(2),
            predict=text_items(1, "p"),
            run_dir=tmp_path / "run",
            seed=0,
        )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"key": "p0", "label": "a"}\n{"key": "p1", "label": \n', r"line 2: invalid JSON"),
        ('{"key": "p0", "label": "a"}\n["p1"]\n', r"line 2: expected a JSON object, got a JSON list.*\"key\""),
        ('{"key": "p0", "label": "a"}\n{"label": "a"}\n', r"line 2: expected a JSON object with a 'key'"),
        (
            '{"key": "p0", "label": "a"}\n{"key": "q1", "label": "a"}\n',
            r"line 2: key 'q1' is not one of the 3 samples.*Did you mean 'p1'",
        ),
        (
            '{"key": "p0", "label": "a"}\n{"key": "p0", "label": "b"}\n',
            r"line 2: key 'p0' was already predicted on line 1",
        ),
        ('{"key": "p0", "label": "bb"}\n', r"line 1: unknown label 'bb'.*Did you mean 'b'"),
        ('{"key": "p0", "proba": {"a": 0.5, "dgo": 0.5}}\n', r"line 1: unknown label 'dgo' in 'proba'"),
        ('{"key": "p0", "proba": {"a": -0.5, "b": 1.5}}\n', r"line 1: probabilities must be finite numbers >= 0"),
        ('{"key": "p0", "proba": {"a": NaN, "b": 1}}\n', r"line 1: probabilities must be finite"),
        ('{"key": "p0", "proba": [0.5, 0.5]}\n', r"line 1: 'proba' must be an object"),
        ('{"key": "p0", "label": "a", "score": 2}\n', r"line 1: 'score' must be a number between 0 and 1"),
        ('{"key": "p0"}\n', r"line 1: a line needs 'proba' or 'label'"),
        ('{"key": "p0", "label": "a"}\n', r"2 of the 3 samples to predict have no line, e\.g\. 'p1', 'p2'"),
    ],
)
def test_malformed_predictions_name_the_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    with pytest.raises(LearnerError, match=expected) as e:
        run_copy(tmp_path, content)
    assert "predictions.jsonl" in str(e.value)


def test_metrics_must_be_numbers(tmp_path: Path) -> None:
    ok = '{"key": "p0", "label": "a"}\n'
    result = run_copy(tmp_path / "a", ok, n_predict=1, metrics='{"accuracy": 0.5, "n": 3}')
    assert result.metrics == {"accuracy": 0.5, "n": 3.0}
    with pytest.raises(LearnerError, match=r"metrics\.json: metric 'model' is \"yolo\".*numbers only"):
        run_copy(tmp_path / "b", ok, n_predict=1, metrics='{"accuracy": 0.5, "model": "yolo"}')
    with pytest.raises(LearnerError, match=r"metrics\.json: expected a JSON object"):
        run_copy(tmp_path / "c", ok, n_predict=1, metrics="[1, 2]")


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------
def test_registered_and_external() -> None:
    lrn = registry.create("learner", "command", {"command": "python train.py {train}"})
    assert isinstance(lrn, CommandLearner) and isinstance(lrn, ExternalLearner) and lrn.name == "command"
    assert lrn.params == CommandParams(command="python train.py {train}")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"command": "python train.py --data {trian}"},
            r"unknown placeholder \{trian\}.*\{train\}, \{predict\}, \{output\}.*Did you mean \{train\}",
        ),
        ({"command": ["python", "-c", "d = {'a': 1}"]}, r"unknown placeholder.*Write a literal brace as '\{\{'"),
        ({"command": "python train.py {train"}, r"malformed placeholder"),
        ({"command": "python 'train.py"}, r"cannot be split into arguments"),
        ({"command": ""}, r"command is empty"),
        ({"command": []}, r"command is empty"),
        ({"command": "python t.py", "env": {"ALLOOP_TRAIN": "x"}}, r"env sets 'ALLOOP_TRAIN'"),
        ({"command": "python t.py", "timeout_s": 0}, r"timeout_s: .*greater than 0"),
        ({"command": "python t.py", "timout_s": 5}, r"unknown field 'timout_s'; did you mean 'timeout_s'"),
        ({}, r"missing required field 'command'"),
    ],
)
def test_bad_parameters_are_config_errors(params: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        registry.create("learner", "command", params)


def test_bad_inputs_are_refused_before_running(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tasks 'classification', 'text', 'detection', got 'segmentation'"):
        learner(PY, "-c", "pass").run(task="segmentation", labels=["a"], train=[], predict=[], run_dir=tmp_path, seed=0)
    with pytest.raises(
        LearnerError, match=r"working directory .*nowhere of the training command does not exist; fix `cwd`"
    ):
        learner(PY, "-c", "pass", cwd=str(tmp_path / "nowhere")).run(
            task="text", labels=["a", "b"], train=[], predict=[], run_dir=tmp_path / "run", seed=0
        )
    with pytest.raises(LearnerError, match=r"label 'z', which is not one of the project's labels"):
        learner(PY, "-c", "pass").run(
            task="text",
            labels=["a", "b"],
            train=[ExportItem("k", {"text": "x"}, label="z")],
            predict=[],
            run_dir=tmp_path / "run",
            seed=0,
        )
    with pytest.raises(LearnerError, match=r"predict samples repeat the key\(s\) 'p0'"):
        learner(PY, "-c", "pass").run(
            task="text", labels=["a", "b"], train=[], predict=text_items(1, "p") * 2, run_dir=tmp_path / "run", seed=0
        )
    image = write_images(tmp_path / "images", 1)[0]
    bad_box = ExportItem(image.key, image.data, boxes=[{"bbox": [0, 0, -3, 5], "label": "cat"}])
    with pytest.raises(LearnerError, match=r"Sample 'im0.png' has the object .*needs 'bbox' \[x, y, w, h\]"):
        learner(PY, "-c", "pass").run(
            task="detection", labels=["cat"], train=[bad_box], predict=[], run_dir=tmp_path / "run", seed=0
        )


def test_detection_without_predictions_says_which_file(tmp_path: Path) -> None:
    with pytest.raises(
        LearnerError, match=r"expected the file .*predictions\.json \(.*\$ALLOOP_OUTPUT\) or predictions\.jsonl"
    ):
        learner(PY, "-c", "pass").run(
            task="detection",
            labels=["cat"],
            train=[],
            predict=write_images(tmp_path / "im"),
            run_dir=tmp_path / "run",
            seed=0,
        )


def test_a_label_may_be_written_as_a_number(tmp_path: Path) -> None:
    result = run_copy(tmp_path, '{"key": "p0", "label": 3, "score": 0.5}\n', labels=("1", "2", "3"), n_predict=1)
    np.testing.assert_allclose(result.proba, [[0.25, 0.25, 0.5]])
