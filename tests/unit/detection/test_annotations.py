"""Box conventions of detection projects: pixels <-> percent, image sizes, COCO truth, mAP."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alloop.detection.annotations import image_size, percent_boxes, pixel_boxes
from alloop.detection.boxes import Proposals
from alloop.detection.metrics import coco_map
from alloop.detection.truth import read_coco_truth
from alloop.errors import PoolImportError, SampleDecodeError


def test_percent_and_pixel_boxes_round_trip():
    boxes = [{"bbox": [10.0, 20.0, 30.0, 40.0], "label": "cat", "score": 0.9},
             {"bbox": [0, 0, 200, 100], "label": "dog"}]
    pct = percent_boxes(boxes, (200, 100))
    assert pct[0] == {"x": 5.0, "y": 20.0, "width": 15.0, "height": 40.0, "rotation": 0, "label": "cat", "score": 0.9}
    assert pct[1]["width"] == 100.0 and "score" not in pct[1]
    back = pixel_boxes(pct, (200, 100))
    assert back == [{"bbox": [10.0, 20.0, 30.0, 40.0], "label": "cat"},
                    {"bbox": [0.0, 0.0, 200.0, 100.0], "label": "dog"}]


def test_pixel_boxes_clip_to_the_image_and_drop_empty_ones():
    pct = [{"x": 90, "y": -10, "width": 20, "height": 30, "label": "a"},  # sticks out right and top
           {"x": 120, "y": 10, "width": 5, "height": 5, "label": "b"}]  # wholly outside
    assert pixel_boxes(pct, (100, 50)) == [{"bbox": [90.0, 0.0, 10.0, 10.0], "label": "a"}]


def test_rotated_box_becomes_its_axis_aligned_hull():
    # 90 degrees around the top-left corner: a 20x10 box at (50, 20) covers x in [40, 50], y in [20, 40]
    pct = [{"x": 50, "y": 20, "width": 20, "height": 10, "rotation": 90, "label": "a"}]
    (b,) = pixel_boxes(pct, (100, 100))
    np.testing.assert_allclose(b["bbox"], [40.0, 20.0, 10.0, 20.0], atol=1e-6)


def test_image_size_from_data_or_file(tmp_path):
    from PIL import Image

    Image.new("L", (37, 21)).save(tmp_path / "a.png")
    assert image_size({"width": 5, "height": 6}) == (5, 6)
    assert image_size({"path": str(tmp_path / "a.png")}) == (37, 21)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SampleDecodeError, match="bad.png"):
        image_size({"path": str(tmp_path / "bad.png")}, "bad.png")


def _coco(tmp_path, **over):
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 32}, {"id": 2, "file_name": "b.png"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4]}],
           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    doc.update(over)
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(doc))
    return path


def test_read_coco_truth(tmp_path):
    labels, boxes, sizes = read_coco_truth(_coco(tmp_path))
    assert labels == ["cat", "dog"]
    assert boxes == {"a.png": [{"bbox": [1.0, 2.0, 3.0, 4.0], "label": "dog"}], "b.png": []}
    assert sizes == {"a.png": (64, 32)}


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"categories": []}, "non-empty 'categories'"),
        ({"annotations": [{"id": 1, "image_id": 9, "category_id": 1, "bbox": [1, 2, 3, 4]}]},
         r"annotations\[0\].*image_id 9"),
        ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, -3, 4]}]}, "non-positive width"),
        ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [70, 2, 3, 4]}]},
         r"annotations\[0\] \(id 1\): box .* lies outside its 64x32 image 'a.png'"),
        ({"categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}]}, "categories repeat the name.*'cat'"),
        ({"categories": [{"id": 1}]}, r"categories\[0\] \(id 1\): missing field\(s\) 'name'"),
    ],
)
def test_read_coco_truth_errors_name_the_entry(tmp_path, over, message):
    with pytest.raises(PoolImportError, match=message):
        read_coco_truth(_coco(tmp_path, **over))


def test_read_coco_truth_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(PoolImportError, match="does not exist"):
        read_coco_truth(tmp_path / "nope.json")
    with pytest.raises(PoolImportError, match="COCO .json"):
        read_coco_truth(tmp_path / "truth.jsonl")


def _truth():
    return [("a", (100, 100), [{"bbox": [10, 10, 20, 20], "label": "cat"}, {"bbox": [50, 50, 30, 30], "label": "dog"}]),
            ("b", (100, 100), [{"bbox": [0, 0, 40, 40], "label": "cat"}])]


def test_coco_map_perfect_and_wrong_detections():
    perfect = Proposals(["a", "a", "b"], [[10, 10, 20, 20], [50, 50, 30, 30], [0, 0, 40, 40]], ["cat", "dog", "cat"],
                        [0.9, 0.8, 0.7])
    m = coco_map(_truth(), perfect, ["cat", "dog"])
    assert m["map50"] == pytest.approx(1.0) and m["map"] == pytest.approx(1.0) and m["n_test_images"] == 2
    shifted = Proposals(["a", "a", "b"], [[25, 25, 20, 20], [50, 50, 30, 30], [0, 0, 40, 40]], ["cat", "dog", "cat"],
                        [0.9, 0.8, 0.7])
    half = coco_map(_truth(), shifted, ["cat", "dog"])  # one cat of two missed (IoU 0.14)
    assert 0.4 < half["map50"] < 1.0
    wrong_class = Proposals(["a"], [[10, 10, 20, 20]], ["dog"], [0.9])
    assert coco_map(_truth(), wrong_class, ["cat", "dog"])["map50"] == 0.0
    assert coco_map(_truth(), Proposals.empty(), ["cat", "dog"])["map50"] == 0.0
    assert coco_map([("a", (10, 10), [])], perfect, ["cat", "dog"])["map50"] == -1.0
