"""Autolabels: COCO / JSON-lines proposal files, their round trips and every malformed-file error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alloop.detection.autolabels import read_autolabels
from alloop.detection.boxes import Proposals
from alloop.errors import ConfigError, PoolImportError

LABELS = ["cat", "dog", "zebra"]


def coco(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "b.png"},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "bbox": [10, 20, 30, 40], "category_id": 3, "score": 0.9},
            {"id": 11, "image_id": 2, "bbox": [1.5, 2.5, 3, 4], "category_id": 7},
            {"id": 12, "image_id": 1, "bbox": [90, 70, 20, 20], "category_id": 7, "score": 0.1},
        ],
        "categories": [{"id": 3, "name": "dog"}, {"id": 7, "name": "cat"}, {"id": 9, "name": "unused"}],
    }
    data.update(overrides)
    return data


def write_json(path: Path, data: Any, indent: int | None = 2) -> Path:
    path.write_text(json.dumps(data, indent=indent), encoding="utf-8")
    return path


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# read_autolabels: round trips
# ---------------------------------------------------------------------------------------------
def test_coco_round_trip_clips_to_image_and_defaults_score(tmp_path: Path) -> None:
    p = read_autolabels(write_json(tmp_path / "dets.json", coco()), labels=LABELS)
    assert isinstance(p, Proposals)
    assert p.image.tolist() == ["a.png", "b.png", "a.png"]
    assert p.label.tolist() == ["dog", "cat", "cat"]
    assert p.score.tolist() == pytest.approx([0.9, 1.0, 0.1])
    # the third box sticks out of the 100x80 image and is clipped; b.png has no size: untouched
    np.testing.assert_allclose(p.box, [[10, 20, 30, 40], [1.5, 2.5, 3, 4], [90, 70, 10, 10]])

    kept = read_autolabels(tmp_path / "dets.json", labels=LABELS, min_score=0.5)
    assert kept.image.tolist() == ["a.png", "b.png"]
    assert len(read_autolabels(tmp_path / "dets.json", labels=LABELS, min_score=0.9)) == 2  # >=


def test_coco_image_sizes_override_and_refuse_unknown_images(tmp_path: Path) -> None:
    path = write_json(tmp_path / "dets.json", coco())
    p = read_autolabels(path, labels=LABELS, image_sizes={"a.png": (200, 200), "b.png": (3, 5)})
    np.testing.assert_allclose(p.box, [[10, 20, 30, 40], [1.5, 2.5, 1.5, 2.5], [90, 70, 20, 20]])
    with pytest.raises(PoolImportError) as exc:
        read_autolabels(path, labels=LABELS, image_sizes={"a.png": (200, 200), "bb.png": (9, 9)})
    msg = str(exc.value)
    assert "dets.json, annotations[1] (id 11)" in msg and "image 'b.png' is not one of the 2 known images" in msg
    assert "did you mean 'bb.png'" in msg
    with pytest.raises(ConfigError, match=r"image_sizes\['a.png'\] must be positive"):
        read_autolabels(path, labels=LABELS, image_sizes={"a.png": (0, 10)})


def test_jsonl_round_trip(tmp_path: Path) -> None:
    rows = [
        {"image": "x/1.png", "box": [0, 0, 5, 6], "label": "zebra", "score": 0.25, "extra": "ignored"},
        "",
        {"image": 17, "bbox": [1, 2, 3, 4], "label": "cat"},
        "   ",
        {"image": "x/1.png", "box": [4, 4, 1, 1], "label": "dog", "score": 1},
    ]
    path = tmp_path / "dets.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + write_lines(path, rows).read_bytes())  # a BOM is fine
    p = read_autolabels(path, labels=LABELS)
    assert p.image.tolist() == ["x/1.png", "17", "x/1.png"]
    assert p.label.tolist() == ["zebra", "cat", "dog"]
    assert p.score.tolist() == pytest.approx([0.25, 1.0, 1.0])
    np.testing.assert_array_equal(p.box, [[0, 0, 5, 6], [1, 2, 3, 4], [4, 4, 1, 1]])
    assert read_autolabels(path, labels=LABELS, min_score=0.3).label.tolist() == ["cat", "dog"]

    # what to_records writes reads back identically
    again = write_lines(tmp_path / "again.jsonl", p.to_records())
    q = read_autolabels(again, labels=LABELS)
    np.testing.assert_array_equal(q.box, p.box)
    assert q.image.tolist() == p.image.tolist() and q.score.tolist() == p.score.tolist()


def test_format_follows_the_content(tmp_path: Path) -> None:
    rows = [{"image": "a.png", "box": [0, 0, 1, 1], "label": "cat"},
            {"image": "b.png", "box": [0, 0, 2, 2], "label": "dog"}]
    as_json = read_autolabels(write_lines(tmp_path / "lines.json", rows), labels=LABELS)
    assert as_json.image.tolist() == ["a.png", "b.png"]
    one_line = read_autolabels(write_lines(tmp_path / "one.json", rows[:1]), labels=LABELS)
    assert one_line.label.tolist() == ["cat"]
    as_jsonl = read_autolabels(write_json(tmp_path / "coco.jsonl", coco()), labels=LABELS)
    assert as_jsonl.label.tolist() == ["dog", "cat", "cat"]
    compact = read_autolabels(write_json(tmp_path / "compact.jsonl", coco(), indent=None), labels=LABELS)
    assert compact.image.tolist() == ["a.png", "b.png", "a.png"]
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert len(read_autolabels(tmp_path / "empty.jsonl", labels=LABELS)) == 0
    assert len(read_autolabels(write_json(tmp_path / "none.json", coco(annotations=[])), labels=LABELS)) == 0


# ---------------------------------------------------------------------------------------------
# read_autolabels: malformed files, each error naming the file and the line or entry
# ---------------------------------------------------------------------------------------------
GOOD = {"image": "a.png", "box": [0, 0, 1, 1], "label": "cat"}

JSONL_ERRORS = [
    ('{"image": "a.png",, "box": [0, 0, 1, 1]}', "invalid JSON (Expecting property name"),
    ("[1, 2, 3]", "expected a JSON object, got a JSON list"),
    ({"image": "a.png", "label": "cat"}, "missing field(s) 'box'"),
    ({"box": [0, 0, 1, 1], "label": "cat"}, "missing field(s) 'image'"),
    ({"image": "a.png", "box": [0, 0, 1], "label": "cat"}, "'box' must be a list of 4 numbers"),
    ({"image": "a.png", "box": [0, 0, "1", 1], "label": "cat"}, "'box' must be a list of 4 numbers"),
    ({"image": "a.png", "bbox": [0, 0, 0, 5], "label": "cat"},
     "'bbox' [0, 0, 0, 5] has a non-positive width or height"),
    ({"image": "a.png", "box": [0, 0, -3, 5], "label": "cat"}, "non-positive width or height"),
    ('{"image": "a.png", "box": [0, NaN, 1, 1], "label": "cat"}', "holds a non-finite number"),
    ('{"image": "a.png", "box": [0, 0, Infinity, 1], "label": "cat"}', "holds a non-finite number"),
    ({"image": "a.png", "box": [0, 0, 1, 1], "label": "zebar"},
     "label 'zebar' is not one of the classes ('cat', 'dog', 'zebra'). Did you mean 'zebra'?"),
    ({"image": "a.png", "box": [0, 0, 1, 1], "label": "cat", "score": 1.5},
     "'score' must be a number between 0 and 1, got 1.5"),
    ({"image": "a.png", "box": [0, 0, 1, 1], "label": "cat", "score": "high"},
     "'score' must be a number between 0 and 1"),
    ({"image": "a.png", "box": [0, 0, 1, 1], "bbox": [0, 0, 1, 1], "label": "cat"},
     "not both"),
    ({"image": "", "box": [0, 0, 1, 1], "label": "cat"}, "'image' must be a non-empty string or number"),
    ({"image": "a.png", "box": [0, 0, 1, 1], "label": None}, "'label' must be a non-empty string or number"),
]


@pytest.mark.parametrize(("bad", "expected"), JSONL_ERRORS)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, bad: Any, expected: str) -> None:
    path = write_lines(tmp_path / "dets.jsonl", [GOOD, "", GOOD, bad, GOOD])
    with pytest.raises(PoolImportError) as exc:
        read_autolabels(path, labels=LABELS)
    msg = str(exc.value)
    assert f"{path}, line 4: " in msg
    assert expected in msg


def test_jsonl_box_outside_its_image(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "dets.jsonl", [GOOD, {"image": "a.png", "box": [0.1, 0.2, 0.3, 0.4], "label": "cat"},
                                                 {"image": "a.png", "box": [50, 0, 5, 5], "label": "dog"}])
    with pytest.raises(PoolImportError) as exc:
        read_autolabels(path, labels=LABELS, image_sizes={"a.png": (40, 30)})
    assert f"{path}, line 3: box [50.0, 0.0, 5.0, 5.0] lies outside its 40x30 image 'a.png'" in str(exc.value)


def coco_error_cases() -> list[tuple[dict[str, Any], str]]:
    base = coco()
    ann, imgs, cats = base["annotations"], base["images"], base["categories"]
    return [
        ({"images": imgs, "annotations": ann},
         "needs a top-level 'categories' list (keys found: 'images', 'annotations')"),
        ({**base, "annotations": {"a": 1}}, "'annotations' must be a list, got a JSON dict"),
        ({**base, "images": [imgs[0], "b.png"]}, "images[1]: expected a JSON object, got a JSON str"),
        ({**base, "annotations": [ann[0], {"id": 11, "image_id": 2, "category_id": 7}]},
         "annotations[1] (id 11): missing field(s) 'bbox'"),
        ({**base, "annotations": [ann[0], {"id": 11, "image_id": 5, "bbox": [0, 0, 1, 1], "category_id": 7}]},
         "annotations[1] (id 11): image_id 5 matches no entry of 'images'"),
        ({**base, "annotations": [ann[0], {"id": 11, "image_id": 2, "bbox": [0, 0, 1, 1], "category_id": 4}]},
         "annotations[1] (id 11): category_id 4 matches no entry of 'categories' (ids: 3, 7, 9)"),
        ({**base, "annotations": [ann[0], {"id": 11, "image_id": 2, "bbox": [0, 0, 0, 1], "category_id": 7}]},
         "annotations[1] (id 11): 'bbox' [0, 0, 0, 1] has a non-positive width or height"),
        ({**base,
          "annotations": [ann[0], {"id": 11, "image_id": 2, "bbox": [0, 0, 1, 1], "category_id": 7, "score": -0.1}]},
         "annotations[1] (id 11): 'score' must be a number between 0 and 1, got -0.1"),
        ({**base, "images": [imgs[0], {"id": 1, "file_name": "b.png"}]},
         "images[1] (id 1): image id 1 is already used by images[0]"),
        ({**base, "images": [imgs[0], {"id": 2, "file_name": "a.png"}]},
         "images[1] (id 2): file_name 'a.png' is already listed as images[0]"),
        ({**base, "images": [imgs[0], {"id": 2, "file_name": "b.png", "width": -4, "height": 3}]},
         "images[1] (id 2): 'width' and 'height' must both be positive numbers"),
        ({**base, "images": [imgs[0], {"file_name": "b.png"}]}, "images[1]: missing field(s) 'id'"),
        ({**base, "categories": [cats[0], {"id": 3, "name": "cat"}]},
         "categories[1] (id 3): category id 3 is already used by categories[0]"),
        ({**base, "categories": [cats[0], {"id": 7, "name": "cta"}]},
         "categories[1] (id 7) (used by annotations[1]): label 'cta' is not one of the classes "
         "('cat', 'dog', 'zebra'). Did you mean 'cat'?"),
    ]


@pytest.mark.parametrize(("data", "expected"), coco_error_cases())
def test_coco_errors_name_file_and_entry(tmp_path: Path, data: dict[str, Any], expected: str) -> None:
    path = write_json(tmp_path / "dets.json", data)
    with pytest.raises(PoolImportError) as exc:
        read_autolabels(path, labels=LABELS)
    msg = str(exc.value)
    assert msg.startswith(str(path))
    assert expected in msg


def test_coco_unused_unknown_category_is_fine(tmp_path: Path) -> None:
    # 'unused' is not in LABELS but no annotation uses it
    assert len(read_autolabels(write_json(tmp_path / "d.json", coco()), labels=LABELS)) == 3


def test_malformed_coco_json_gives_line_and_column(tmp_path: Path) -> None:
    text = json.dumps(coco(), indent=2).replace('"bbox": [\n        10,', '"bbox": [\n        10,,', 1)
    path = tmp_path / "dets.json"
    path.write_text(text)
    with pytest.raises(PoolImportError) as exc:
        read_autolabels(path, labels=LABELS)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip() == "10,,")
    msg = str(exc.value)
    assert f"{path}: invalid JSON at line {line}, column 12" in msg and "Expecting value" in msg
    top = tmp_path / "list.json"
    write_json(top, [{"image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 1, "score": 0.5}])
    with pytest.raises(PoolImportError, match="expected a COCO object .* got a JSON list"):
        read_autolabels(top, labels=LABELS)


def test_file_level_and_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(PoolImportError, match="unsupported extension '.csv'"):
        read_autolabels(tmp_path / "dets.csv", labels=LABELS)
    with pytest.raises(PoolImportError, match="does not exist"):
        read_autolabels(tmp_path / "nope.jsonl", labels=LABELS)
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"image": "\xe9", "box": [0, 0, 1, 1], "label": "cat"}\n')
    with pytest.raises(PoolImportError, match="latin1.jsonl: not valid UTF-8"):
        read_autolabels(bad, labels=LABELS)
    good = write_lines(tmp_path / "ok.jsonl", [GOOD])
    with pytest.raises(ConfigError, match="labels is empty"):
        read_autolabels(good, labels=[])
    with pytest.raises(ConfigError, match="repeats 'cat'"):
        read_autolabels(good, labels=["cat", "cat"])
    with pytest.raises(ConfigError, match="labels must be a list"):
        read_autolabels(good, labels="cat")
    with pytest.raises(ConfigError, match="min_score must be between 0 and 1, got 2"):
        read_autolabels(good, labels=LABELS, min_score=2)
