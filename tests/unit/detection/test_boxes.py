"""Boxes and Proposals: conversions, IoU, clipping, validation, the columnar structure."""

from __future__ import annotations

import numpy as np
import pytest

from alloop.detection.boxes import (
    Proposals,
    as_boxes,
    box_iou,
    check_boxes,
    clip_boxes,
    invalid_boxes,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from alloop.errors import ConfigError


def test_conversions_round_trip_and_do_not_alias() -> None:
    xywh = np.array([[10, 20, 30, 40], [0.5, 1.5, 2.0, 3.0]], dtype=np.float32)
    xyxy = xywh_to_xyxy(xywh)
    np.testing.assert_array_equal(xyxy, [[10, 20, 40, 60], [0.5, 1.5, 2.5, 4.5]])
    np.testing.assert_array_equal(xyxy_to_xywh(xyxy), xywh)
    assert xyxy.dtype == np.float32
    np.testing.assert_array_equal(xywh, [[10, 20, 30, 40], [0.5, 1.5, 2.0, 3.0]])  # input untouched
    assert as_boxes([]).shape == (0, 4)
    with pytest.raises(ConfigError, match=r"shape \(n, 4\).*got shape \(2, 3\)"):
        as_boxes([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ConfigError, match="rows of 4 numbers"):
        as_boxes([["a", "b", "c", "d"]])


def test_iou_known_values() -> None:
    a = [[0, 0, 10, 10], [100, 100, 5, 5]]
    b = [[0, 0, 10, 10], [5, 5, 10, 10], [10, 0, 10, 10], [0, 0, 20, 20]]
    iou = box_iou(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [1.0, 25 / 175, 0.0, 100 / 400])  # touching edges -> 0
    np.testing.assert_array_equal(iou[1], [0, 0, 0, 0])
    np.testing.assert_allclose(box_iou(b, a), iou.T)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)
    assert box_iou([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 0.0  # empty union is not NaN


def test_clip_and_invalid() -> None:
    boxes = [[-5, -5, 10, 10], [90, 40, 20, 20], [200, 0, 10, 10], [10, 10, 5, 5]]
    clipped = clip_boxes(boxes, width=100, height=50)
    np.testing.assert_array_equal(clipped, [[0, 0, 5, 5], [90, 40, 10, 10], [100, 0, 0, 10], [10, 10, 5, 5]])
    np.testing.assert_array_equal(invalid_boxes(clipped), [False, False, True, False])
    bad = [[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 1, -1], [np.nan, 0, 1, 1], [0, np.inf, 1, 1]]
    np.testing.assert_array_equal(invalid_boxes(bad), [False, True, True, True, True])


def test_check_boxes_names_the_first_bad_box() -> None:
    assert check_boxes([[1, 2, 3, 4]]).dtype == np.float32
    with pytest.raises(ConfigError) as exc:
        check_boxes([[0, 0, 1, 1], [0, 0, 5, 0], [0, 0, -1, 3]], where="dets.jsonl")
    msg = str(exc.value)
    assert "dets.jsonl: box 1 is [0.0, 0.0, 5.0, 0.0]" in msg
    assert "2 box(es) are invalid" in msg and "positive width and height" in msg


def make(n: int = 3) -> Proposals:
    return Proposals(
        image=["a.png", "b.png", "a.png"][:n],
        box=[[0, 0, 10, 10], [5, 5, 4, 4], [1, 2, 3, 4]][:n],
        label=["cat", "dog", "dog"][:n],
        score=[0.9, 0.2, 0.5][:n],
    )


def test_proposals_columns_subsets_and_records() -> None:
    p = make()
    assert len(p) == 3
    assert p.box.dtype == np.float32 and p.score.dtype == np.float32 and p.box.shape == (3, 4)
    assert p.images() == ["a.png", "b.png"]
    a = p.of_image("a.png")
    assert a.label.tolist() == ["cat", "dog"] and a.score.tolist() == pytest.approx([0.9, 0.5])
    assert p.above(0.5).label.tolist() == ["cat", "dog"]  # >= keeps the 0.5 one
    assert p[1].image.tolist() == ["b.png"]
    assert p[np.array([2, 0])].box.tolist() == [[1, 2, 3, 4], [0, 0, 10, 10]]
    np.testing.assert_array_equal(p.xyxy()[2], [1, 2, 4, 6])
    records = p.to_records()
    assert records[1] == {"image": "b.png", "box": [5.0, 5.0, 4.0, 4.0], "label": "dog", "score": pytest.approx(0.2)}
    again = Proposals.from_records(records)
    np.testing.assert_array_equal(again.box, p.box)
    assert again.label.tolist() == p.label.tolist()
    both = Proposals.concat([p, Proposals.empty(), p[:1]])
    assert len(both) == 4 and both.image.tolist()[-1] == "a.png"
    assert len(Proposals.concat([])) == 0 and len(Proposals.from_records([])) == 0
    assert Proposals.from_records([{"image": 7, "box": [0, 0, 1, 1], "label": "x"}]).score.tolist() == [1.0]
    assert "n=3" in repr(p) and "'cat'" in repr(p)


def test_proposals_are_read_only_copies() -> None:
    boxes = np.array([[0, 0, 10, 10]], dtype=np.float32)
    p = Proposals(image=["a"], box=boxes, label=["x"], score=[1.0])
    boxes[0, 0] = 99
    assert p.box[0, 0] == 0
    with pytest.raises(ValueError):
        p.box[0, 0] = 5
    with pytest.raises(AttributeError):
        p.score = np.zeros(1)  # type: ignore[misc]


def test_proposals_validation() -> None:
    with pytest.raises(ConfigError, match="lengths image=2, box=1, label=1, score=1"):
        Proposals(image=["a", "b"], box=[[0, 0, 1, 1]], label=["x"], score=[1])
    with pytest.raises(ConfigError, match="Proposals.box: box 0"):
        Proposals(image=["a"], box=[[0, 0, 0, 1]], label=["x"], score=[1])
    with pytest.raises(ConfigError, match=r"score\[1\] is nan"):
        Proposals(image=["a", "a"], box=[[0, 0, 1, 1]] * 2, label=["x", "x"], score=[1, float("nan")])
    with pytest.raises(ConfigError, match="single string"):
        Proposals(image="a", box=[[0, 0, 1, 1]], label=["x"], score=[1])
