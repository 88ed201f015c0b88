"""Contract every registered labeling-tool connector must honour (a new connector needs a harness).

Each connector gets a *harness* (``HARNESSES``) that knows its tool: how to build the connector
on real storage (the simulated annotator's known labels, real hand-off files, a real Label
Studio server), how a person labels, skips or deletes in that tool, and how to count the tasks
the tool holds. The assertions are the same for every connector.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alloop import registry
from alloop.errors import ConnectorDataError
from alloop.protocols import (
    AnnotationRecord,
    CompletePull,
    Connector,
    ConnectorContext,
    IncrementalPull,
    Prediction,
    TaskPayload,
    TaskRef,
    WebhookEvent,
    WebhookSource,
)
from tests.contract._coverage import assert_builtins_registered, assert_every_plugin_has_a_harness

NAMES = registry.available("connector")
BUILTINS = {"oracle", "jsonl", "label_studio"}
LABELS = ("cat", "dog", "eel")
KINDS = ("classification", "text", "detection")  # images, texts, images with boxes
W, H = 16, 12  # image size in pixels
ROUND, OTHER_ROUND = 3, 4
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: a webhook call recorded from a real Label Studio 1.23 (its project invite token redacted)
WEBHOOK_PAYLOAD = Path(__file__).with_name("data") / "label_studio_webhook_annotation_created.json"


@dataclass(frozen=True)
class Answer:
    """What one annotator did on one task: a label, or a skip (``label`` None)."""

    key: str
    annotator: str
    label: str | None

    @property
    def cancelled(self) -> bool:
        return self.label is None


def box_of(label: str) -> dict[str, Any]:
    """The box an annotator draws for ``label`` (percent of the image; whole pixels of a WxH image)."""
    i = LABELS.index(label)
    return {"x": 25.0 * i, "y": 50.0, "width": 50.0, "height": 25.0, "rotation": 0, "label": label}


def boxes_view(value: Any) -> tuple | None:
    if not value or "boxes" not in value:
        return None
    return tuple(sorted((round(float(b["x"]), 4), round(float(b["y"]), 4), round(float(b["width"]), 4),
                         round(float(b["height"]), 4), b["label"]) for b in value["boxes"]))


def record_view(r: AnnotationRecord) -> tuple:
    return (r.sample_key, r.external_task_id, r.label, r.cancelled, r.annotator, boxes_view(r.value))


def expect(a: Answer, ext: str, annotator: str, task: str) -> tuple:
    """The record view a pull must give for answer ``a`` (a detection answer is one box of its label)."""
    if task != "detection":
        return (a.key, ext, a.label, a.cancelled, annotator, None)
    return (a.key, ext, None, a.cancelled, annotator, None if a.cancelled else boxes_view({"boxes": [box_of(a.label)]}))


#: what people do in a tool with a person at it: on the pushed samples k0..k4, ana labels k0,
#: skips k1 (after choosing a label: a skip is no label all the same), ana and bob label k2;
#: k3 and k4 stay unlabeled
def plan(keys: list[str]) -> list[Answer]:
    return [Answer(keys[0], "ana", LABELS[0]), Answer(keys[1], "ana", None),
            Answer(keys[2], "ana", LABELS[1]), Answer(keys[2], "bob", LABELS[2])]


# ---------------------------------------------------------------------------------------------
# harnesses: one per connector
# ---------------------------------------------------------------------------------------------
@dataclass
class Harness:
    """How the suite drives one labeling tool. Subclasses implement the tool-specific parts."""

    name: str
    tmp_path: Path
    #: the tool keeps tasks outside this process (the simulated annotator keeps none)
    holds_tasks: bool = True
    #: the tool answers every task at once (the simulated annotator), so nothing stays unlabeled
    answers_every_task: bool = False
    truth: dict[str, str] = field(default_factory=dict)

    def context(self, task: str, project: str) -> ConnectorContext:
        return ConnectorContext(
            project=project, task=task, labels=LABELS, work_dir=self.tmp_path / "work", seed=11,
            reference_labels=lambda keys: {k: self.truth.get(k) for k in keys},
            reference_boxes=lambda keys: {k: {"boxes": [box_of(self.truth[k])]} if k in self.truth else None
                                          for k in keys},
            pool_root=self.sample_dir())

    def params(self) -> dict[str, Any]:
        return {}

    def make(self, task: str, project: str | None = None) -> Any:
        project = project or f"contract-{uuid.uuid4().hex[:10]}"
        return registry.create("connector", self.name, self.params(), context=self.context(task, project))

    def sample_dir(self) -> Path:
        return self.tmp_path / "samples"

    def count_tasks(self, conn: Any) -> int:
        raise NotImplementedError

    def label(self, conn: Any, ids: dict[str, str], answers: list[Answer]) -> list[tuple]:
        """Make ``answers`` happen in the tool; return the records a pull must then give."""
        raise NotImplementedError

    def delete_task(self, conn: Any, key: str, external_id: str) -> None:
        raise NotImplementedError

    def delete_annotation(self, conn: Any, record: AnnotationRecord) -> None:
        raise NotImplementedError

    def malformed_ids(self, key: str) -> list[str]:
        raise NotImplementedError

    def webhook_payloads(self) -> tuple[dict[str, Any], dict[str, Any], str]:
        """(an annotation event, another event, the tool project they name)."""
        raise NotImplementedError


class OracleHarness(Harness):
    """The simulated annotator: known labels in the context; two annotators who skip half the time."""

    def params(self) -> dict[str, Any]:
        return {"annotators": 2, "skip_rate": 0.5}

    def count_tasks(self, conn: Any) -> int:
        return 0  # nothing is stored anywhere

    def label(self, conn: Any, ids: dict[str, str], answers: list[Answer]) -> list[tuple]:
        # The oracle answers every task it is asked about, from the known labels: its documented
        # rule is that annotator ``a`` skips a task when derive_rng(seed, "oracle", key, a) < skip_rate.
        from alloop.rng import derive_rng

        out = []
        for key, ext in ids.items():
            for a in range(2):
                skipped = bool(derive_rng(11, "oracle", key, a).random() < 0.5)
                answer = Answer(key, f"oracle-{a}", None if skipped else self.truth[key])
                out.append(expect(answer, ext, answer.annotator, conn.context.task))
        return out

    def malformed_ids(self, key: str) -> list[str]:
        return [key, f"oracle:{key}x", "17"]


class JsonlHarness(Harness):
    """File hand-off: the tasks file is the tool's task list; people write the labels file."""

    def count_tasks(self, conn: Any) -> int:
        lines = [json.loads(x) for x in conn.tasks_path.read_text().splitlines() if x.strip()]
        return len(lines)

    def label(self, conn: Any, ids: dict[str, str], answers: list[Answer]) -> list[tuple]:
        task = conn.context.task
        with open(conn.labels_path, "a", encoding="utf-8") as fh:
            for a in answers:
                row: dict[str, Any] = {"key": a.key, "annotator": a.annotator}
                drawn = a.label or LABELS[0]  # a skip after choosing: still no label
                if task == "detection":  # pixels, [x, y, w, h]
                    b = box_of(drawn)
                    bbox = [b["x"] * W / 100, b["y"] * H / 100, b["width"] * W / 100, b["height"] * H / 100]
                    row["boxes"] = [{"bbox": bbox, "label": drawn}]
                else:
                    row["label"] = drawn
                if a.cancelled:
                    row["cancelled"] = True
                fh.write(json.dumps(row) + "\n")
        return [expect(a, ids[a.key], a.annotator, task) for a in answers]

    def delete_task(self, conn: Any, key: str, external_id: str) -> None:
        for path in (conn.tasks_path, conn.labels_path):
            if path.exists():
                kept = [x for x in path.read_text().splitlines() if x.strip() and json.loads(x)["key"] != key]
                path.write_text("".join(x + "\n" for x in kept))

    def malformed_ids(self, key: str) -> list[str]:
        return [f"oracle:{key}", f"{key}x", "17"]


class LabelStudioHarness(Harness):
    """A real Label Studio server: annotations created, tasks and annotations deleted through its API."""

    def __init__(self, name: str, tmp_path: Path, server: Any) -> None:
        super().__init__(name, tmp_path)
        self.server = server
        self.folder = Path(server.document_root) / f"contract-{uuid.uuid4().hex[:10]}"
        from tests.integration import ls_support

        self.lss = ls_support
        self.ls = ls_support.client()

    def sample_dir(self) -> Path:
        return self.folder  # local-files serving reaches files below the document root only

    def count_tasks(self, conn: Any) -> int:
        return len(self.lss.tasks(self.ls, conn.project_id, "task_only"))

    def label(self, conn: Any, ids: dict[str, str], answers: list[Answer]) -> list[tuple]:
        who = self.lss.users(self.ls, sorted({a.annotator for a in answers}))
        task = conn.context.task
        to_name = "text" if task == "text" else "image"
        for a in answers:
            drawn = a.label or LABELS[0]  # a skip after choosing: still no label
            if task == "detection":
                box = {k: v for k, v in box_of(drawn).items() if k != "label"}
                result = [{"from_name": "label", "to_name": "image", "type": "rectanglelabels",
                           "original_width": W, "original_height": H,
                           "value": {**box, "rectanglelabels": [drawn]}}]
            else:
                result = self.lss.choice(drawn, to_name)
            self.ls.annotations.create(int(ids[a.key]), result=result, completed_by=who[a.annotator],
                                       was_cancelled=a.cancelled, lead_time=1.0)
        return [expect(a, ids[a.key], f"{a.annotator}@alloop.local", task) for a in answers]

    def delete_task(self, conn: Any, key: str, external_id: str) -> None:
        self.ls.tasks.delete(external_id)

    def delete_annotation(self, conn: Any, record: AnnotationRecord) -> None:
        self.ls.annotations.delete(int(record.source_id))

    def malformed_ids(self, key: str) -> list[str]:
        return [key, f"oracle:{key}", "12a", "-3", "0"]

    def webhook_payloads(self) -> tuple[dict[str, Any], dict[str, Any], str]:
        created = json.loads(WEBHOOK_PAYLOAD.read_text())  # recorded from a real Label Studio
        other = copy.deepcopy(created)
        other["action"] = "PROJECT_UPDATED"
        other.pop("annotation")
        return created, other, str(created["project"]["id"])


HARNESSES: dict[str, Callable[[pytest.FixtureRequest, Path], Harness]] = {
    "oracle": lambda request, tmp: OracleHarness("oracle", tmp, holds_tasks=False, answers_every_task=True),
    "jsonl": lambda request, tmp: JsonlHarness("jsonl", tmp),
    "label_studio": lambda request, tmp: LabelStudioHarness("label_studio", tmp,
                                                            request.getfixturevalue("label_studio")),
}


@pytest.fixture(params=NAMES)
def h(request, tmp_path) -> Harness:
    if request.param not in HARNESSES:
        pytest.fail(f"The connector {request.param!r} has no harness in tests/contract/test_connectors_contract.py: "
                    "add one to HARNESSES (how to build it, label in it and count its tasks).")
    return HARNESSES[request.param](request, tmp_path)


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


def samples(h: Harness, kind: str, n: int = 5, round_number: int = ROUND) -> list[TaskPayload]:
    """``n`` real samples (PNG images or texts) as payloads; every other one pre-annotated."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    folder = h.sample_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        key = f"s{uuid.uuid4().hex[:6]}-{i}"
        h.truth[key] = LABELS[i % 3]
        if kind == "text":
            data: dict[str, Any] = {"text": f"sample text number {i}: a {LABELS[i % 3]}"}
        else:
            path = folder / f"{key}.png"
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
            data = {"path": str(path), "width": W, "height": H}
        pred = None
        if i % 2 == 0 and kind == "detection":  # a model's proposed box as pre-annotation
            pred = Prediction(LABELS[i % 3], 0.7, "contract-round-3",
                              value={"boxes": [{**box_of(LABELS[i % 3]), "score": 0.7}]})
        elif i % 2 == 0:
            pred = Prediction(LABELS[i % 3], 0.7, "contract-round-3",
                              proba={lb: (0.7 if lb == LABELS[i % 3] else 0.15) for lb in LABELS})
        out.append(TaskPayload(key, "text" if kind == "text" else "image", data, round_number, pred))
    return out


def refs(ids: dict[str, str], round_number: int = ROUND) -> list[TaskRef]:
    return [TaskRef(k, v, round_number, T0) for k, v in ids.items()]


def pushed(h: Harness, kind: str, n: int = 5) -> tuple[Any, list[TaskPayload], dict[str, str]]:
    conn = h.make(kind)
    conn.ensure_project()
    payloads = samples(h, kind, n)
    ids = conn.push(payloads)
    return conn, payloads, ids


# ---------------------------------------------------------------------------------------------
# the contract
# ---------------------------------------------------------------------------------------------
def test_every_builtin_connector_is_registered():
    assert_builtins_registered("connector", NAMES, BUILTINS)


def test_every_registered_connector_has_a_harness():
    assert_every_plugin_has_a_harness("connector", NAMES, HARNESSES)


def test_builtin_capabilities():
    cls = {n: registry.load("connector", n) for n in BUILTINS}
    assert [n for n in sorted(BUILTINS) if hasattr(cls[n], "pull_complete")] == ["label_studio"]
    assert [n for n in sorted(BUILTINS) if hasattr(cls[n], "webhook_event")] == ["label_studio"]
    assert [n for n in sorted(BUILTINS) if hasattr(cls[n], "pull_changes")] == ["label_studio"]
    assert [n for n in sorted(BUILTINS) if hasattr(cls[n], "present_round")] == ["label_studio"]
    assert [n for n in sorted(BUILTINS) if hasattr(cls[n], "refresh_tasks")] == ["label_studio"]


def test_is_a_connector_and_ensure_project_is_idempotent(h, kind):
    conn = h.make(kind, project="contract-adopt-" + uuid.uuid4().hex[:8])
    assert isinstance(conn, Connector) and conn.name == h.name
    conn.ensure_project()
    conn.ensure_project()
    ids = conn.push(samples(h, kind, 3))
    # a second connector of the same project finds the same project (and its tasks) again
    again = h.make(kind, project=conn.context.project)
    again.ensure_project()
    again.ensure_project()
    assert again.find_tasks(list(ids), ROUND) == (ids if h.holds_tasks else {})
    assert h.count_tasks(conn) == (3 if h.holds_tasks else 0)
    conn.close()
    again.close()


def test_push_is_idempotent_by_key(h, kind):
    conn = h.make(kind)
    conn.ensure_project()
    payloads = samples(h, kind, 5)
    first = conn.push(payloads[:3])
    assert set(first) == {p.sample_key for p in payloads[:3]}
    assert len(set(first.values())) == 3 and all(isinstance(v, str) and v for v in first.values())
    ids = conn.push(payloads)  # three already there, two new
    assert set(ids) == {p.sample_key for p in payloads} and len(set(ids.values())) == 5
    assert {k: ids[k] for k in first} == first
    again = conn.push(payloads)
    assert again == ids
    assert conn.push(payloads + payloads[:2]) == ids  # a key given twice in one push is one task
    assert h.count_tasks(conn) == (5 if h.holds_tasks else 0)
    conn.close()


def test_find_tasks_returns_the_pushed_ids_only(h, kind):
    conn, payloads, ids = pushed(h, kind)
    never = ["never-pushed-1", "never-pushed-2"]
    keys = [p.sample_key for p in payloads]
    assert conn.find_tasks(keys + never, ROUND) == ids
    assert conn.find_tasks(keys[:2], ROUND) == {k: ids[k] for k in keys[:2]}
    assert conn.find_tasks(never, ROUND) == {}
    assert conn.find_tasks([], ROUND) == {}
    assert conn.find_tasks(keys, OTHER_ROUND) == {}  # pushed in another round
    conn.close()


def test_pull_returns_what_was_labeled_and_the_same_records_again(h, kind):
    conn, payloads, ids = pushed(h, kind)
    keys = [p.sample_key for p in payloads]
    expected = h.label(conn, ids, plan(keys))
    # the harness's answers hold a label, a skip and a task with two annotators
    assert any(e[3] for e in expected) and any(not e[3] for e in expected)
    assert any(sum(e[0] == k for e in expected) >= 2 for k in keys)
    records = conn.pull(refs(ids))
    assert all(isinstance(r, AnnotationRecord) for r in records)
    assert sorted(map(record_view, records), key=repr) == sorted(expected, key=repr)
    assert all(r.label is None and r.value is None for r in records if r.cancelled)  # a skip is no label
    if kind == "detection":  # boxes in percent of the image, no label of the whole image
        assert all(r.label is None and (r.value is None) == r.cancelled for r in records)
    else:
        assert all(r.label in LABELS for r in records if not r.cancelled)
    assert len({r.source_id for r in records}) == len(records)
    if not h.answers_every_task:
        assert not {keys[3], keys[4]} & {r.sample_key for r in records}  # unlabeled: nothing
    again = conn.pull(refs(ids))
    assert {r.source_id: record_view(r) for r in again} == {r.source_id: record_view(r) for r in records}
    # a pull of some tasks gives those tasks' annotations only
    part = conn.pull(refs({keys[2]: ids[keys[2]]}))
    assert sorted(map(record_view, part), key=repr) == sorted((e for e in expected if e[0] == keys[2]), key=repr)
    assert conn.pull([]) == []
    conn.close()


def test_an_id_the_tool_never_issued_is_refused_naming_it(h, kind):
    conn, payloads, ids = pushed(h, kind, 2)
    key = payloads[0].sample_key
    good = refs(ids)
    for bad_id in h.malformed_ids(key):
        with pytest.raises(ConnectorDataError) as err:
            conn.pull([*good, TaskRef(key, bad_id, ROUND, T0)])
        assert repr(bad_id) in str(err.value)
    conn.close()


def test_a_task_deleted_in_the_tool_yields_no_annotations_not_an_error(h, kind):
    conn, payloads, ids = pushed(h, kind, 3)
    keys = [p.sample_key for p in payloads]
    expected = h.label(conn, ids, [Answer(keys[0], "ana", LABELS[0]), Answer(keys[1], "ana", LABELS[1])])
    if h.answers_every_task:
        # nothing can be deleted: a valid id of a task this instance never pushed is answered
        fresh = h.make(kind)
        records = fresh.pull(refs(ids))
        assert sorted(map(record_view, records), key=repr) == sorted(expected, key=repr)
        return
    h.delete_task(conn, keys[0], ids[keys[0]])
    records = conn.pull(refs(ids))
    assert [record_view(r) for r in records] == [e for e in expected if e[0] == keys[1]]
    conn.close()


def test_complete_pull_lists_every_annotation_and_forgets_deleted_ones(h, kind):
    conn, payloads, ids = pushed(h, kind)
    if not isinstance(conn, CompletePull):
        assert not hasattr(conn, "pull_complete")  # the capability is declared by the method alone
        return
    keys = [p.sample_key for p in payloads]
    expected = h.label(conn, ids, plan(keys))
    records = conn.pull_complete(refs(ids))
    assert sorted(map(record_view, records), key=repr) == sorted(expected, key=repr)
    gone = next(r for r in records if r.sample_key == keys[2] and r.annotator.startswith("bob"))
    h.delete_annotation(conn, gone)
    after = conn.pull_complete(refs(ids))
    assert {r.source_id for r in after} == {r.source_id for r in records} - {gone.source_id}
    conn.close()


def test_incremental_pull_is_full_first_then_reads_what_changed(h, kind):
    conn, payloads, ids = pushed(h, kind)
    if not isinstance(conn, IncrementalPull):
        assert not hasattr(conn, "pull_changes")
        return
    keys = [p.sample_key for p in payloads]
    expected = h.label(conn, ids, plan(keys))
    first = conn.pull_changes(refs(ids), None)  # no cursor: every task, complete
    assert first.full and first.complete == set(ids.values())
    assert sorted(map(record_view, first.records), key=repr) == sorted(expected, key=repr)
    cursor = json.loads(json.dumps(first.cursor))  # stored as JSON between pulls
    later = h.label(conn, ids, [Answer(keys[3], "bob", LABELS[0])])
    second = conn.pull_changes(refs(ids), cursor)
    assert ids[keys[3]] in second.complete and second.complete <= set(ids.values())
    assert later[0] in [record_view(r) for r in second.records]
    assert {r.external_task_id for r in second.records} <= second.complete  # only tasks it read
    conn.close()


def test_webhook_events_wake_on_annotation_changes_only(h):
    conn = h.make("text")
    if not isinstance(conn, WebhookSource):
        assert not hasattr(conn, "webhook_event")
        return
    created, other, tool_project = h.webhook_payloads()
    event = conn.webhook_event(created)
    assert isinstance(event, WebhookEvent)
    assert event.action == created["action"] and event.wakes is True and event.tool_project == tool_project
    quiet = conn.webhook_event(other)
    assert isinstance(quiet, WebhookEvent) and quiet.action == other["action"] and quiet.wakes is False
    assert conn.webhook_event({"project": {"id": 3}}) is None  # no action: not an event of this tool
    assert conn.webhook_event([created]) is None
    conn.close()


def test_close_is_idempotent(h, kind):
    fresh = h.make(kind)
    fresh.close()
    fresh.close()
    conn, _, _ = pushed(h, kind, 2)
    conn.close()
    conn.close()
    # closing released connections only: the tool still holds what was pushed
    assert h.count_tasks(conn) == (2 if h.holds_tasks else 0)
