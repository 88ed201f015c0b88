"""The ONNX proposal source: a YOLOv8-shaped model exported from torch and run with onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alloop.detection.boxes import Proposals
from alloop.detection.onnx_yolo import OnnxYoloDetector
from alloop.errors import ConfigError, SampleDecodeError

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
    with pytest.raises(ConfigError,
                       match=r"exported for \(1, 3, 64, 64\) inputs but input_size=640.*Pass input_size=64"):
        OnnxYoloDetector(models["yolo"], ["a", "b"])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx model")
    with pytest.raises(ConfigError, match="onnxruntime cannot load the model"):
        OnnxYoloDetector(garbage, ["a", "b"], input_size=S)
    with pytest.raises(ConfigError, match="conf must be between 0 and 1"):
        OnnxYoloDetector(models["yolo"], ["a", "b"], input_size=S, conf=1.5)
    with pytest.raises(ConfigError, match="max_det must be a positive integer"):
        OnnxYoloDetector(models["yolo"], ["a", "b"], input_size=S, max_det=0)
