"""Proposal sources: COCO / JSON-lines autolabels (round trips and every malformed-file error)
and a YOLOv8-shaped ONNX model exported from torch and run with onnxruntime."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from alloop.detection.boxes import Proposals
from alloop.detection.proposals import OnnxYoloDetector, read_autolabels
from alloop.errors import ConfigError, PoolImportError, SampleDecodeError

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
    rows = [{"image": "a.png", "box": [0, 0, 1, 1], "label": "cat"}, {"image": "b.png", "box": [0, 0, 2, 2], "label": "dog"}]
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
    ({"image": "a.png", "bbox": [0, 0, 0, 5], "label": "cat"}, "'bbox' [0, 0, 0, 5] has a non-positive width or height"),
    ({"image": "a.png", "box": [0, 0, -3, 5], "label": "cat"}, "non-positive width or height"),
    ('{"image": "a.png", "box": [0, NaN, 1, 1], "label": "cat"}', "holds a non-finite number"),
    ('{"image": "a.png", "box": [0, 0, Infinity, 1], "label": "cat"}', "holds a non-finite number"),
    ({"image": "a.png", "box": [0, 0, 1, 1], "label": "zebar"}, "label 'zebar' is not one of the classes ('cat', 'dog', 'zebra'). Did you mean 'zebra'?"),
    ({"image": "a.png", "box": [0, 0, 1, 1], "label": "cat", "score": 1.5}, "'score' must be a number between 0 and 1, got 1.5"),
    ({"image": "a.png", "box": [0, 0, 1, 1], "label": "cat", "score": "high"}, "'score' must be a number between 0 and 1"),
    ({"image": "a.png", "box": [0, 0, 1, 1], "bbox": [0, 0, 1, 1], "label": "cat"}, "not both"),
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
    path = write_lines(tmp_path / "dets.jsonl", [GOOD, {"image": "a.png", "box": [0.1, 0.2, 0.3, 0.4], "label": "cat"}, {"image": "a.png", "box": [50, 0, 5, 5], "label": "dog"}])
    with pytest.raises(PoolImportError) as exc:
        read_autolabels(path, labels=LABELS, image_sizes={"a.png": (40, 30)})
    assert f"{path}, line 3: box [50.0, 0.0, 5.0, 5.0] lies outside its 40x30 image 'a.png'" in str(exc.value)


def coco_error_cases() -> list[tuple[dict[str, Any], str]]:
    base = coco()
    ann, imgs, cats = base["annotations"], base["images"], base["categories"]
    return [
        ({"images": imgs, "annotations": ann}, "needs a top-level 'categories' list (keys found: 'images', 'annotations')"),
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
        ({**base, "annotations": [ann[0], {"id": 11, "image_id": 2, "bbox": [0, 0, 1, 1], "category_id": 7, "score": -0.1}]},
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
         "categories[1] (id 7) (used by annotations[1]): label 'cta' is not one of the classes ('cat', 'dog', 'zebra'). Did you mean 'cat'?"),
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


# ---------------------------------------------------------------------------------------------
# OnnxYoloDetector on a real exported model
# ---------------------------------------------------------------------------------------------
S = 64  # model input size
#: Anchor boxes (x1, y1, x2, y2) in letterboxed input pixels, and the classes each may score.
ANCHORS = [
    ((8, 24, 24, 40), (1, 0)),   # 0: the yellow square -> class a, score ~1
    ((10, 24, 26, 40), (1, 0)),  # 1: shifted duplicate of 0 (IoU 0.78), lower score -> suppressed
    ((40, 24, 56, 48), (1, 1)),  # 2: the green rectangle -> class b, score ~1
    ((24, 32, 40, 48), (1, 1)),  # 3: the dark red square -> class a, score ~0.5
    ((0, 0, 16, 16), (1, 1)),    # 4: padding only -> score 0
    ((8, 22, 24, 38), (0, 1)),   # 5: overlaps 0 (IoU 0.78) but class b -> kept by class-wise NMS
    ((48, 0, 64, 8), (1, 1)),    # 6-8: padding only (and 9 anchors, more than 4 + classes)
    ((0, 56, 16, 64), (1, 1)),
    ((16, 48, 32, 64), (1, 1)),
]
# The 200x100 test image is letterboxed with scale 0.32 and 16 rows of padding on top, so an
# input point (u, v) is the image point (u / 0.32, (v - 16) / 0.32).
EXPECTED = {  # anchor -> (label, xywh box in the original image)
    0: ("a", [25, 25, 50, 50]),
    2: ("b", [125, 25, 50, 75]),
    3: ("a", [75, 50, 50, 50]),
    5: ("b", [25, 18.75, 50, 50]),
}
DUPLICATE = [31.25, 25, 50, 50]  # anchor 1 in the original image


class RegionScorer(torch.nn.Module):
    """YOLOv8-shaped output: fixed anchors, class c scored relu(mean(channel c) - mean(blue))."""

    def __init__(self, transpose: bool = False, flat: bool = False) -> None:
        super().__init__()
        masks = torch.zeros(len(ANCHORS), S * S)
        boxes = torch.zeros(4, len(ANCHORS))
        allow = torch.zeros(2, len(ANCHORS))
        for a, ((x1, y1, x2, y2), classes) in enumerate(ANCHORS):
            m = torch.zeros(S, S)
            m[y1:y2, x1:x2] = 1.0 / ((x2 - x1) * (y2 - y1))
            masks[a] = m.flatten()
            boxes[:, a] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
            allow[:, a] = torch.tensor(classes, dtype=torch.float32)
        self.register_buffer("masks", masks)
        self.register_buffer("boxes", boxes)
        self.register_buffer("allow", allow)
        self.transpose, self.flat = transpose, flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.reshape(3, S * S) @ self.masks.T  # (3, anchors)
        scores = torch.relu(means[:2] - means[2:3]) * self.allow
        out = torch.cat([self.boxes, scores], dim=0).unsqueeze(0)  # (1, 4 + 2, anchors)
        if self.flat:
            return out.reshape(1, -1)
        return out.transpose(1, 2) if self.transpose else out


def export(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), (torch.zeros(1, 3, S, S),), str(path), dynamo=False,
            input_names=["images"], output_names=["output0"],
        )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    return {
        "yolo": export(RegionScorer(), root / "yolo.onnx"),
        "transposed": export(RegionScorer(transpose=True), root / "transposed.onnx"),
        "flat": export(RegionScorer(flat=True), root / "flat.onnx"),
    }


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rgb = np.zeros((100, 200, 3), np.uint8)  # height 100, width 200: letterboxed with padding
    rgb[25:75, 25:75] = (255, 255, 0)
    rgb[25:100, 125:175] = (0, 255, 0)
    rgb[50:100, 75:125] = (128, 0, 0)
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(rgb).save(path)
    return path


def by_box(p: Proposals) -> dict[tuple[float, ...], tuple[str, float]]:
    return {tuple(np.round(b, 2)): (lab, float(s)) for b, lab, s in zip(p.box, p.label.tolist(), p.score)}


def assert_expected(p: Proposals, anchors: list[int]) -> None:
    assert len(p) == len(anchors)
    found = by_box(p)
    for a in anchors:
        label, box = EXPECTED[a]
        match = [k for k in found if np.allclose(k, box, atol=1e-3)]
        assert match, f"anchor {a}: no box {box} among {list(found)}"
        assert found[match[0]][0] == label


def test_detector_decodes_letterboxed_boxes_nms_and_threshold(models: dict[str, Path], scene: Path) -> None:
    det = OnnxYoloDetector(models["yolo"], ["a", "b"], input_size=S)
    p = det.detect([scene])
    assert_expected(p, [0, 2, 3, 5])
    assert set(p.image.tolist()) == {str(scene)}
    assert (np.diff(p.score) <= 0).all()  # best first
    scores = {a: by_box(p)[tuple(EXPECTED[a][1])][1] for a in (0, 2, 3, 5)}
    assert scores[0] > 0.95 and scores[2] > 0.95
    assert 0.8 < scores[5] < 0.95  # two of its 16 rows are black image
    assert 0.45 < scores[3] < 0.55  # 128 / 255
    assert not any(np.allclose(b, DUPLICATE, atol=0.01) for b in p.box)  # anchor 1 suppressed

    lax = OnnxYoloDetector(models["yolo"], ["a", "b"], input_size=S, iou=0.9).detect([scene])
    assert len(lax) == 5 and any(np.allclose(b, DUPLICATE, atol=1e-3) for b in lax.box)

    strict = OnnxYoloDetector(models["yolo"], ["a", "b"], input_size=S, conf=0.6).detect([scene])
    assert_expected(strict, [0, 2, 5])
    top2 = OnnxYoloDetector(models["yolo"], ["a", "b"], input_size=S, max_det=2).detect([scene])
    assert_expected(top2, [0, 2])


def test_detector_transposed_output_pil_inputs_and_keys(models: dict[str, Path], scene: Path) -> None:
    det = OnnxYoloDetector(models["transposed"], ["a", "b"], input_size=S)
    black = Image.new("L", (50, 120))  # grayscale and tall: converted to RGB, nothing found
    with Image.open(scene) as img:
        p = det.detect([black, img.copy()], keys=["black.png", "scene.png"])
    assert p.images() == ["scene.png"]
    assert_expected(p, [0, 2, 3, 5])
    default_keys = det.detect([black, str(scene)])
    assert default_keys.images() == [str(scene)]
    assert len(det.detect([])) == 0
    with pytest.raises(ConfigError, match="2 images but 1 keys"):
        det.detect([black, black], keys=["x"])
    broken = scene.with_name("broken.png")
    broken.write_bytes(b"not a png")
    with pytest.raises(SampleDecodeError, match="broken.png"):
        det.detect([broken])


def test_detector_errors(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        OnnxYoloDetector(tmp_path / "missing.onnx", ["a", "b"], input_size=S)
    with pytest.raises(ConfigError) as exc:
        OnnxYoloDetector(models["yolo"], ["a", "b", "c"], input_size=S)
    msg = str(exc.value)
    assert "class count mismatch" in msg and "(1, 6, 9)" in msg and "2 classes" in msg
    assert "class_names has 3 names" in msg and "(1, 4 + 3 = 7, n_anchors)" in msg
    with pytest.raises(ConfigError) as exc:
        OnnxYoloDetector(models["flat"], ["a", "b"], input_size=S)
    assert "shape (1, 54), which is not YOLO-like" in str(exc.value)
    assert "expected (1, 4 + 2 = 6, n_anchors) or (1, n_anchors, 6)" in str(exc.value)
    with pytest.raises(ConfigError, match=r"exported for \(1, 3, 64, 64\) inputs but input_size=640.*Pass input_size=64"):
        OnnxYoloDetector(models["yolo"], ["a", "b"])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx model")
    with pytest.raises(ConfigError, match="onnxruntime cannot load the model"):
        OnnxYoloDetector(garbage, ["a", "b"], input_size=S)
    with pytest.raises(ConfigError, match="conf must be between 0 and 1"):
        OnnxYoloDetector(models["yolo"], ["a", "b"], input_size=S, conf=1.5)
    with pytest.raises(ConfigError, match="max_det must be a positive integer"):
        OnnxYoloDetector(models["yolo"], ["a", "b"], input_size=S, max_det=0)
