from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from alloop import registry
from alloop.errors import ConfigError, ConnectorDataError
from alloop.protocols import Connector, ConnectorContext, TaskPayload, TaskRef

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
LABELS = ("cat", "dog", "eel")
TRUTH = {f"s{i}": LABELS[i % 3] for i in range(300)}


def ctx(tmp_path: Path) -> ConnectorContext:
    return ConnectorContext(project="p", task="classification", labels=LABELS, work_dir=tmp_path, seed=7,
                            reference_labels=lambda keys: {k: TRUTH.get(k) for k in keys})


def make(name, tmp_path, **params):
    return registry.load("connector", name).from_params(params, context=ctx(tmp_path))


@pytest.mark.parametrize("name", registry.available("connector"))
def test_every_connector_implements_the_protocol(name, tmp_path):
    conn = make(name, tmp_path)
    assert isinstance(conn, Connector) and not isinstance(conn, type)
    assert conn.name == name
    with pytest.raises(ConfigError):
        registry.load("connector", name).from_params({"no_such_param": 1}, context=ctx(tmp_path))


def refs(keys):
    return [TaskRef(k, f"oracle:{k}", 0, T0) for k in keys]


def test_oracle_answers_truth_deterministically(tmp_path):
    o = make("oracle", tmp_path)
    keys = list(TRUTH)[:30]
    assert o.push([TaskPayload(k, "vector", {}, 0) for k in keys]) == {k: f"oracle:{k}" for k in keys}
    a1, a2 = o.pull(refs(keys)), o.pull(refs(keys))
    assert a1 == a2
    assert {a.sample_key: a.label for a in a1} == {k: TRUTH[k] for k in keys}


def test_oracle_noise_skips_and_annotators(tmp_path):
    o = make("oracle", tmp_path, noise=0.3, annotators=3, skip_rate=0.1)
    keys = list(TRUTH)
    anns = o.pull(refs(keys))
    assert len(anns) == 3 * len(keys)
    assert len({a.source_id for a in anns}) == len(anns)
    labeled = [a for a in anns if not a.cancelled]
    wrong = np_mean([a.label != TRUTH[a.sample_key] for a in labeled])
    skipped = np_mean([a.cancelled for a in anns])
    assert 0.22 < wrong < 0.38
    assert 0.05 < skipped < 0.15
    assert all(a.label in LABELS for a in labeled)


def np_mean(xs):
    return sum(xs) / len(xs)


def test_oracle_refuses_samples_without_known_label(tmp_path):
    o = make("oracle", tmp_path)
    with pytest.raises(ConnectorDataError, match="without a known label"):
        o.push([TaskPayload("unknown", "vector", {}, 0)])


def test_jsonl_roundtrip_update_cancel_and_adoption(tmp_path):
    j = make("jsonl", tmp_path)
    keys = ["s1", "s2", "s3"]
    ids = j.push([TaskPayload(k, "image", {"path": f"/x/{k}.png"}, 2) for k in keys])
    assert ids == {k: k for k in keys}
    assert j.find_tasks(["s1", "s3", "s9"]) == {"s1": "s1", "s3": "s3"}
    lines = [json.loads(x) for x in (tmp_path / "handoff" / "tasks.jsonl").read_text().splitlines()]
    assert [x["key"] for x in lines] == keys and lines[0]["round"] == 2
    labels = tmp_path / "handoff" / "labels.jsonl"
    labels.write_text(
        '{"key": "s1", "label": "cat", "annotator": "ana"}\n'
        '{"key": "s2", "cancelled": true, "annotator": "ana"}\n'
        '{"key": "s1", "label": "dog", "annotator": "ana", "updated_at": "2026-01-02T00:00:00Z"}\n'
        '{"key": "s3", "label": "eel", "annotator": "bob", "id": "x-1"}\n'
    )
    anns = {a.source_id: a for a in j.pull([TaskRef(k, k, 2, T0) for k in keys])}
    assert anns["s1#ana"].label == "dog"  # the later line replaced the earlier one
    assert anns["s2#ana"].cancelled and anns["s2#ana"].label is None
    assert anns["x-1"].annotator == "bob"
    assert anns["s1#ana"].updated_at == datetime(2026, 1, 2, tzinfo=timezone.utc)


def test_jsonl_bad_line_names_file_and_line(tmp_path):
    j = make("jsonl", tmp_path)
    j.push([TaskPayload("s1", "image", {}, 0)])
    labels = tmp_path / "handoff" / "labels.jsonl"
    labels.write_text('{"key": "s1", "label": "cat"}\n{oops\n')
    with pytest.raises(ConnectorDataError, match=r"labels.jsonl, line 2: invalid JSON"):
        j.pull([TaskRef("s1", "s1", 0, T0)])
    labels.write_text('{"key": "s1", "label": 3}\n')
    with pytest.raises(ConnectorDataError, match=r"labels.jsonl:1: field 'label' must be a string"):
        j.pull([TaskRef("s1", "s1", 0, T0)])


BOXES = {f"img{i}": {"boxes": [{"x": 10.0 * j, "y": 5.0, "width": 8.0, "height": 9.0, "rotation": 0,
                                "label": LABELS[(i + j) % 3]}
                               for j in range(i % 4)]} for i in range(200)}


def detection_oracle(tmp_path, **params):
    context = ConnectorContext(project="p", task="detection", labels=LABELS, work_dir=tmp_path, seed=7,
                               reference_boxes=lambda keys: {k: BOXES.get(k) for k in keys})
    return registry.load("connector", "oracle").from_params(params, context=context)


def test_oracle_answers_detection_tasks_with_the_true_boxes(tmp_path):
    o = detection_oracle(tmp_path)
    keys = list(BOXES)[:20]
    o.push([TaskPayload(k, "image", {}, 0) for k in keys])
    anns = o.pull(refs(keys))
    assert anns == o.pull(refs(keys))
    assert all(a.label is None and not a.cancelled for a in anns)
    assert {a.sample_key: a.value for a in anns} == {k: BOXES[k] for k in keys}  # img0, img4...: no object, empty list


def test_oracle_detection_noise_relabels_boxes_and_refuses_images_without_truth(tmp_path):
    o = detection_oracle(tmp_path, noise=0.25, skip_rate=0.1)
    anns = o.pull(refs(list(BOXES)))
    pairs = [(b["label"], t["label"]) for a in anns if not a.cancelled
             for b, t in zip(a.value["boxes"], BOXES[a.sample_key]["boxes"])]
    assert len(pairs) > 200 and 0.17 < np_mean([x != y for x, y in pairs]) < 0.33
    assert all(x in LABELS for x, _ in pairs)
    assert 0.04 < np_mean([a.cancelled for a in anns]) < 0.17 and all(a.value is None for a in anns if a.cancelled)
    with pytest.raises(ConnectorDataError, match="without ground-truth boxes"):
        o.push([TaskPayload("nope", "image", {}, 0)])


def test_jsonl_detection_writes_and_reads_pixel_boxes(tmp_path):
    from alloop.protocols import Prediction

    context = ConnectorContext(project="p", task="detection", labels=LABELS, work_dir=tmp_path, seed=0)
    conn = registry.load("connector", "jsonl").from_params({}, context=context)
    pred = Prediction("cat", 0.8, "r1", value={"boxes": [{"x": 10, "y": 50, "width": 20, "height": 25, "label": "cat",
                                                          "score": 0.8}]})
    conn.push([TaskPayload("a.png", "image", {"path": "/x/a.png", "width": 200, "height": 80}, 1, pred),
               TaskPayload("b.png", "image", {"path": "/x/b.png", "width": 100, "height": 100}, 1)])
    task = json.loads(conn.tasks_path.read_text().splitlines()[0])
    assert task["prediction"] == {"boxes": [{"bbox": [20.0, 40.0, 40.0, 20.0], "label": "cat", "score": 0.8}],
                                  "model_version": "r1"}
    conn.labels_path.write_text(
        json.dumps({"key": "a.png", "boxes": [{"bbox": [20, 40, 40, 20], "label": "dog"}], "annotator": "ana"}) + "\n"
        + json.dumps({"key": "b.png", "boxes": [], "annotator": "ana"}) + "\n")
    got = {a.sample_key: a for a in conn.pull([TaskRef("a.png", "a.png", 1, T0), TaskRef("b.png", "b.png", 1, T0)])}
    assert got["a.png"].value == {"boxes": [{"x": 10.0, "y": 50.0, "width": 20.0, "height": 25.0, "rotation": 0,
                                             "label": "dog"}]} and got["a.png"].label is None
    assert got["b.png"].value == {"boxes": []}
    bad = {"key": "b.png", "boxes": [{"bbox": [1, 2, 0, 4], "label": "cat"}]}
    conn.labels_path.write_text(json.dumps({"key": "a.png", "label": "dog"}) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ConnectorDataError, match=r"labels.jsonl:1: a detection label needs \"boxes\""):
        conn.pull([TaskRef("a.png", "a.png", 1, T0)])
    with pytest.raises(ConnectorDataError, match=r"labels.jsonl:2: boxes\[0\] must be .* w, h > 0"):
        conn.pull([TaskRef("b.png", "b.png", 1, T0)])


def test_jsonl_push_after_a_push_killed_mid_line_rewrites_that_task_once(tmp_path):
    j = make("jsonl", tmp_path)
    j.push([TaskPayload("s1", "text", {"text": "one"}, 0)])
    with open(j.tasks_path, "a") as fh:
        fh.write('{"data": {"text": "tw')  # the process died while appending s2's line
    ids = j.push([TaskPayload("s1", "text", {"text": "one"}, 0), TaskPayload("s2", "text", {"text": "two"}, 0)])
    assert ids == {"s1": "s1", "s2": "s2"}
    lines = [json.loads(x) for x in j.tasks_path.read_text().splitlines()]
    assert [x["key"] for x in lines] == ["s1", "s2"] and lines[1]["data"] == {"text": "two"}
    assert j.find_tasks(["s1", "s2"], round_number=0) == ids and j.find_tasks(["s1"], round_number=1) == {}


def test_label_studio_stream_mode_params_and_their_errors():
    from alloop.protocols import StreamPresenter
    from connectors.label_studio.connector import LabelStudioConnector

    ctx = ConnectorContext(project="p", labels=("a", "b"))
    batch = LabelStudioConnector.from_params({}, context=ctx)
    assert isinstance(batch, StreamPresenter) and batch.stream_factor() is None  # batch by default
    assert LabelStudioConnector.from_params({"mode": "stream"}, context=ctx).stream_factor() == 5
    assert LabelStudioConnector.from_params({"mode": "stream", "stream_factor": 2}, context=ctx).stream_factor() == 2
    with pytest.raises(ConfigError, match=r"mode: Input should be 'batch' or 'stream' \(got 'streaming'\)"):
        LabelStudioConnector.from_params({"mode": "streaming"}, context=ctx)
    with pytest.raises(ConfigError, match=r"stream_factor: Input should be greater than or equal to 2 \(got 1\)"):
        LabelStudioConnector.from_params({"mode": "stream", "stream_factor": 1}, context=ctx)
