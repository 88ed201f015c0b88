"""The one COCO writer and reader: documents from samples, files written atomically, checked reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alloop.detection.coco import coco_document, parse_coco, read_coco, write_coco
from alloop.errors import LearnerError, PoolImportError

ITEMS = [
    ("a", {"path": "/x/a.png", "width": 10, "height": 8}, [{"bbox": [1, 1, 2, 3], "label": "dog", "score": 0.5}]),
    ("b", {"path": "/x/b.png", "width": 10, "height": 8}, []),
    ("c", {"path": "/x/c.png", "width": 12, "height": 6}, None),
]


def test_coco_document_lists_images_boxes_and_categories():
    doc = coco_document(ITEMS, ["cat", "dog"])
    assert [i["alloop_key"] for i in doc["images"]] == ["a", "b", "c"] and doc["images"][0]["file_name"] == "/x/a.png"
    assert [i["id"] for i in doc["images"]] == [1, 2, 3] and doc["images"][2]["width"] == 12
    assert doc["annotations"] == [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1.0, 1.0, 2.0, 3.0],
                                   "area": 6.0, "iscrowd": 0, "score": 0.5}]
    assert doc["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    by_key = coco_document(ITEMS, ["cat", "dog"], file_name="key")
    assert [i["file_name"] for i in by_key["images"]] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("box", "error", "expected"),
    [
        ({"bbox": [1, 1, 2, 3], "label": "bird"}, PoolImportError,
         r"Sample 'a' has the label 'bird', which is not one of the project's labels \('cat'\)"),
        ({"bbox": [1, 1, -2, 3], "label": "cat"}, PoolImportError,
         r"Sample 'a' has the object .*needs 'bbox' \[x, y, w, h\]"),
        ({"bbox": [1, 1, 2], "label": "cat"}, LearnerError,
         r"needs 'bbox' \[x, y, w, h\] \(pixels, w, h > 0\) and 'label'"),
        ({"bbox": [1, 1, 2, float("nan")], "label": "cat"}, LearnerError, "needs 'bbox'"),
        ({"bbox": [1, 1, 2, 3]}, LearnerError, "and 'label'"),
    ],
)
def test_coco_document_refuses_bad_boxes_with_the_callers_error(box, error, expected):
    with pytest.raises(error, match=expected):
        coco_document([("a", {"width": 10, "height": 8}, [box])], ["cat"], error=error)


def test_write_then_read_round_trip(tmp_path: Path):
    doc = coco_document(ITEMS, ["cat", "dog"])
    write_coco(tmp_path / "out.json", doc, indent=1)
    assert (tmp_path / "out.json").read_text() == json.dumps(doc, indent=1)
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left
    back = read_coco(tmp_path / "out.json")
    assert back.categories == ["cat", "dog"]
    assert [(img.id, img.file_name, img.size) for img in back.images] == [
        (1, "/x/a.png", (10.0, 8.0)), (2, "/x/b.png", (10.0, 8.0)), (3, "/x/c.png", (12.0, 6.0))]
    (box,) = back.boxes
    assert (box.image, box.box, box.label, box.score) == ("/x/a.png", [1.0, 1.0, 2.0, 3.0], "dog", 0.5)
    assert box.where == f"{tmp_path / 'out.json'}, annotations[0] (id 1)"
    assert back.sizes() == {"/x/a.png": (10.0, 8.0), "/x/b.png": (10.0, 8.0), "/x/c.png": (12.0, 6.0)}


def test_read_errors_name_the_file_and_the_entry(tmp_path: Path):
    with pytest.raises(PoolImportError, match="does not exist"):
        read_coco(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [,]}')
    with pytest.raises(PoolImportError, match=r"bad.json: invalid JSON at line 1, column 13 .*Fix the file\. Or else"):
        read_coco(bad, alternative="Or else.")
    with pytest.raises(PoolImportError, match=r"needs a top-level 'annotations' list .*Add it\. Try JSON lines\.$"):
        parse_coco(bad, {"images": [], "categories": []}, alternative="Try JSON lines.")
    doc = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 5, "name": "cta"}],
           "annotations": [{"id": 9, "image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1]}]}
    assert len(parse_coco(bad, doc).boxes) == 1  # without labels, any category name is fine
    with pytest.raises(PoolImportError) as exc:
        parse_coco(bad, doc, labels=["cat"])
    assert str(exc.value).startswith(f"{bad}, categories[0] (id 5) (used by annotations[0]): label 'cta'")
    assert "Did you mean 'cat'?" in str(exc.value)
