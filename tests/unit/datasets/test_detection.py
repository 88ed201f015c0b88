"""Synthetic detection pools: exact boxes around real pasted objects, class frequencies, the rare
class, determinism, COCO output, and imperfect autolabels whose noise parameters hold."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alloop.config import FolderSource
from alloop.datasets.crops import FASHION_MNIST_CLASSES, load_crops
from alloop.datasets.detection import INK_THRESHOLD, make_detection_pool
from alloop.datasets.fashion_mnist import DatasetNotFoundError
from alloop.datasets.idx import read_idx
from alloop.datasets.noisy_autolabels import write_autolabels_from_truth
from alloop.detection.autolabels import read_autolabels
from alloop.detection.boxes import box_iou
from alloop.errors import ConfigError
from alloop.pool.images import scan_folder


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def pixels(pool, file_name: str) -> np.ndarray:
    with Image.open(pool.images_dir / file_name) as img:
        assert img.mode == "L"
        return np.asarray(img)


def by_image(coco: dict) -> dict[str, list[dict]]:
    name = {im["id"]: im["file_name"] for im in coco["images"]}
    out: dict[str, list[dict]] = {im["file_name"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        out[name[ann["image_id"]]].append(ann)
    return out


def tight_box(mask: np.ndarray) -> list[int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def test_single_object_box_and_area_are_exact_and_the_object_is_a_real_crop_of_its_class(tmp_path: Path) -> None:
    pool = make_detection_pool(
        tmp_path, n_images=40, objects_per_image=(1, 1), scale=(1.0, 1.0), background="black",
        canvas_size=(60, 40),
    )
    coco = load(pool.path)
    images, labels, names = load_crops("mnist")
    ink = np.where(images >= INK_THRESHOLD, images, 0)  # what an unscaled object is made of
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    for file_name, anns in by_image(coco).items():
        px = pixels(pool, file_name)
        assert px.shape == (40, 60) and len(anns) == 1
        (ann,) = anns
        assert ann["bbox"] == tight_box(px > 0)
        assert ann["area"] == int((px > 0).sum())
        x, y, w, h = ann["bbox"]
        patch = px[y : y + h, x : x + w]
        assert px[px > 0].min() >= INK_THRESHOLD
        # the patch is a real crop of the annotated class, trimmed to its ink
        crops = []
        for i in np.flatnonzero(labels == names.index(cats[ann["category_id"]])):
            cx, cy, cw, ch = tight_box(ink[i] > 0)
            crops.append(ink[i][cy : cy + ch, cx : cx + cw])
        assert any(c.shape == patch.shape and np.array_equal(c, patch) for c in crops)


def test_many_objects_boxes_enclose_pasted_pixels_and_keep_apart(tmp_path: Path) -> None:
    pool = make_detection_pool(
        tmp_path, n_images=60, objects_per_image=(2, 4), scale=(1.0, 2.0), background="black", max_iou=0.15,
    )
    coco = load(pool.path)
    assert pool.n_objects == len(coco["annotations"]) == sum(pool.class_counts.values())
    sizes = []
    for file_name, anns in by_image(coco).items():
        px = pixels(pool, file_name)
        assert 2 <= len(anns) <= 4
        covered = np.zeros(px.shape, bool)
        for ann in anns:
            x, y, w, h = ann["bbox"]
            covered[y : y + h, x : x + w] = True
            box = px[y : y + h, x : x + w] > 0
            # every edge of the box touches ink: the box is tight
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
            assert 0 < ann["area"] <= w * h
            sizes.append(max(w, h))
        assert not (px > 0)[~covered].any()  # no ink outside the boxes
        boxes = [a["bbox"] for a in anns]
        for a, b in combinations(range(len(boxes)), 2):
            assert box_iou([boxes[a]], [boxes[b]])[0, 0] < 0.15
    assert max(sizes) <= 56 and min(sizes) >= 10


@pytest.mark.parametrize("background", ["noise", "texture"])
def test_backgrounds_stay_below_the_objects(tmp_path: Path, background: str) -> None:
    pool = make_detection_pool(tmp_path, n_images=10, objects_per_image=(1, 2), background=background)
    coco = load(pool.path)
    for file_name, anns in by_image(coco).items():
        px = pixels(pool, file_name)
        outside = np.ones(px.shape, bool)
        for ann in anns:
            x, y, w, h = ann["bbox"]
            outside[y : y + h, x : x + w] = False
            assert px[y : y + h, x : x + w].max() > 128  # bright ink inside every box
        assert px[outside].max() < 64 and px[outside].std() > 2  # a varied, dark background


def test_class_weights_are_followed_exactly(tmp_path: Path) -> None:
    weights = {"1": 1.0, "3": 2.0, "8": 5.0}
    pool = make_detection_pool(tmp_path / "a", n_images=150, class_names=["1", "3", "8"], class_weights=weights)
    n = pool.n_objects
    assert pool.class_names == ("1", "3", "8")
    for name, w in weights.items():
        assert abs(pool.class_counts[name] - n * w / 8) < 1
    coco = load(pool.path)
    assert [c["name"] for c in coco["categories"]] == ["1", "3", "8"]
    realized = Counter(coco["annotations"][i]["category_id"] for i in range(n))
    assert {coco["categories"][k - 1]["name"]: v for k, v in realized.items()} == pool.class_counts
    assert pool.class_fractions["8"] == pytest.approx(5 / 8, abs=1 / n)
    same = make_detection_pool(tmp_path / "b", n_images=150, class_names=["1", "3", "8"], class_weights=[1, 2, 5])
    assert same.class_counts == pool.class_counts


def test_rare_class_gets_its_exact_fraction(tmp_path: Path) -> None:
    pool = make_detection_pool(tmp_path, n_images=400, rare_class="7", rare_fraction=0.02)
    n = pool.n_objects
    coco = load(pool.path)
    seven = next(c["id"] for c in coco["categories"] if c["name"] == "7")
    n_rare = sum(a["category_id"] == seven for a in coco["annotations"])
    assert n_rare == pool.class_counts["7"] == round(0.02 * n)
    assert pool.rare_class == "7" and pool.rare_fraction == n_rare / n
    assert abs(pool.rare_fraction - 0.02) <= 0.5 / n
    others = [v for k, v in pool.class_counts.items() if k != "7"]
    assert max(others) - min(others) <= 1 and sum(others) == n - n_rare
    tiny = make_detection_pool(tmp_path / "tiny", n_images=5, rare_class="0", rare_fraction=0.01,
                               class_weights={"1": 1, "2": 1, "3": 0, "4": 0, "5": 0, "6": 0, "7": 0, "8": 0, "9": 0})
    assert tiny.class_counts["0"] == 1  # a rare class never vanishes
    assert tiny.class_counts["1"] + tiny.class_counts["2"] == tiny.n_objects - 1
    assert tiny.class_counts["9"] == 0


def test_same_seed_same_bytes_and_folder_keys_match_coco(tmp_path: Path) -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    kwargs = {"n_images": 25, "rare_class": "3", "background": "texture"}
    a = make_detection_pool(tmp_path / "a", seed=5, **kwargs)
    make_detection_pool(tmp_path / "b", seed=5, **kwargs)
    c = make_detection_pool(tmp_path / "c", seed=6, **kwargs)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert len(files(tmp_path / "a")) == 26
    assert a.path.read_bytes() != c.path.read_bytes()
    assert (a.images_dir / "000000.png").read_bytes() != (c.images_dir / "000000.png").read_bytes()

    scanned = scan_folder(FolderSource(path=a.images_dir), tmp_path)
    assert [i.key for i in scanned.items] == [im["file_name"] for im in load(a.path)["images"]]


def test_coco_output_reads_back_as_proposals(tmp_path: Path) -> None:
    pool = make_detection_pool(tmp_path, n_images=30)
    coco = load(pool)  # os.fspath(pool) is the COCO file
    truth = read_autolabels(pool, labels=list(pool.class_names),
                            image_sizes={f"{i:06d}.png": (128, 128) for i in range(30)})
    assert len(truth) == pool.n_objects
    np.testing.assert_array_equal(truth.box, [a["bbox"] for a in coco["annotations"]])
    assert truth.score.tolist() == [1.0] * len(truth)
    assert Counter(truth.label.tolist()) == {k: v for k, v in pool.class_counts.items() if v}
    assert all((pool.images_dir / key).is_file() for key in truth.images())
    assert all(im["width"] == 128 and im["height"] == 128 for im in coco["images"])


def test_fashion_mnist_crops_from_the_idx_files(tmp_path: Path) -> None:
    images, labels, names = load_crops("fashion_mnist")
    assert images.shape == (10000, 28, 28) and names == FASHION_MNIST_CLASSES
    assert np.bincount(labels).tolist() == [1000] * 10
    pool = make_detection_pool(tmp_path, n_images=8, source="fashion_mnist", class_names=["Bag", "Sneaker"],
                               canvas_size=(96, 64), scale=(1.0, 1.5))
    assert pool.class_names == ("Bag", "Sneaker") and pool.n_objects == sum(pool.class_counts.values())
    assert pixels(pool, "000007.png").shape == (64, 96)
    with pytest.raises(ValueError, match="not an IDX file"):
        bad = tmp_path / "bad.idx"
        bad.write_bytes(b"\x00\x00\x09\x01" + bytes(8))
        read_idx(bad)


def test_fashion_mnist_crops_from_a_missing_folder_say_where_they_looked(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as exc:
        make_detection_pool(tmp_path / "pool", n_images=2, source="fashion_mnist", crops_dir=tmp_path / "nowhere")
    msg = str(exc.value)
    assert f"{tmp_path / 'nowhere'} (the folder argument)" in msg and "t10k-images-idx3-ubyte.gz" in msg
    assert "sudo apt-get install dataset-fashion-mnist" in msg and "Or use source='mnist'" in msg
    assert isinstance(exc.value, ConfigError) and not (tmp_path / "pool" / "annotations.json").exists()


def test_overwrite(tmp_path: Path) -> None:
    make_detection_pool(tmp_path, n_images=6)
    with pytest.raises(ConfigError, match="already holds a detection pool.*overwrite=True"):
        make_detection_pool(tmp_path, n_images=3)
    (tmp_path / "images" / "notes.txt").write_text("mine")
    pool = make_detection_pool(tmp_path, n_images=3, overwrite=True)
    assert sorted(p.name for p in pool.images_dir.iterdir()) == ["000000.png", "000001.png", "000002.png", "notes.txt"]
    assert len(load(pool.path)["images"]) == 3


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"class_names": ["1", "77"]}, "class_names entry '77' is not a class of the crops .* Did you mean '7'"),
        ({"source": "fashion-mnist"}, "Unknown crop source 'fashion-mnist'.*Did you mean 'fashion_mnist'"),
        ({"class_names": ["1", "2"], "class_weights": {"1": 1}}, "class_weights has no weight for '2'"),
        ({"class_names": ["1", "2"], "class_weights": [1, 2, 3]}, "3 values but there are 2 classes"),
        ({"class_names": ["1", "2"], "class_weights": [1, -2]}, "finite and >= 0"),
        ({"class_names": ["1", "2"], "rare_class": "1", "class_weights": {"2": 0}}, "no weight to any non-rare class"),
        ({"rare_class": "11"}, "rare_class '11' is not a class"),
        ({"rare_class": "1", "rare_fraction": 0}, "rare_fraction must be between 0 and 1"),
        ({"scale": (1.0, 5.0)}, "makes objects of 140 pixels, larger than the 128x128 canvas"),
        ({"scale": (2.0, 1.0)}, "scale must satisfy"),
        ({"objects_per_image": (0, 0)}, "puts no object anywhere"),
        ({"canvas_size": (100,)}, "canvas_size must be \\(width, height\\)"),
        ({"background": "plaid"}, "background must be one of 'noise', 'texture', 'black'"),
        ({"n_images": 0}, "n_images must be a positive integer"),
        ({"canvas_size": (30, 30), "objects_per_image": (6, 6), "scale": (1.0, 1.0), "max_iou": 0.01},
         "too crowded"),
    ],
)
def test_parameter_errors(tmp_path: Path, kwargs: dict, expected: str) -> None:
    args = {"n_images": 4, **kwargs}
    with pytest.raises(ConfigError, match=expected):
        make_detection_pool(tmp_path, **args)
    assert not list(tmp_path.rglob("*.png")) and not (tmp_path / "annotations.json").exists()


# ---------------------------------------------------------------------------------------------
# imperfect autolabels
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def truth_pool(tmp_path_factory: pytest.TempPathFactory):
    return make_detection_pool(tmp_path_factory.mktemp("pool"), n_images=150, objects_per_image=(1, 3))


def match(pool, proposals_path: Path) -> list[tuple[str, str | None, float]]:
    """(proposal label, label of the best-overlapping true box or None, that IoU) per proposal."""
    coco = load(pool.path)
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    truth = {k: ([a["bbox"] for a in anns], [cats[a["category_id"]] for a in anns])
             for k, anns in by_image(coco).items()}
    sizes = {im["file_name"]: (im["width"], im["height"]) for im in coco["images"]}
    props = read_autolabels(proposals_path, labels=list(pool.class_names), image_sizes=sizes)
    out = []
    for key, box, label in zip(props.image.tolist(), props.box, props.label.tolist()):
        boxes, names = truth[key]
        iou = box_iou([box], boxes)[0] if boxes else np.zeros(0)
        best = int(iou.argmax()) if iou.size else -1
        out.append((label, names[best] if best >= 0 else None, float(iou.max()) if iou.size else 0.0))
    return out


def test_perfect_autolabels_are_the_truth(truth_pool, tmp_path: Path) -> None:
    out = write_autolabels_from_truth(truth_pool, tmp_path / "auto.jsonl", noise=0, miss_rate=0,
                                      false_positive_rate=0, label_confusion=0)
    assert (out.n_truth, out.n_missed, out.n_relabeled, out.n_false_positives) == (truth_pool.n_objects, 0, 0, 0)
    props = read_autolabels(out, labels=list(truth_pool.class_names))
    truth = read_autolabels(truth_pool, labels=list(truth_pool.class_names))
    np.testing.assert_array_equal(props.box, truth.box)
    assert props.label.tolist() == truth.label.tolist() and props.image.tolist() == truth.image.tolist()
    assert props.score.min() >= 0.5 and props.score.max() <= 1.0


def test_noise_parameters_do_what_they_say(truth_pool, tmp_path: Path) -> None:
    n = truth_pool.n_objects
    out = write_autolabels_from_truth(truth_pool, tmp_path / "auto.jsonl", noise=0.05, miss_rate=0.2,
                                      false_positive_rate=0.1, label_confusion=0.25, seed=3)
    n_found = n - round(0.2 * n)
    assert out.n_missed == round(0.2 * n) and out.n_false_positives == round(0.1 * n)
    assert out.n_relabeled == round(0.25 * n_found)
    assert out.n_proposals == n_found + out.n_false_positives
    assert len(out.path.read_text().splitlines()) == out.n_proposals

    matched = match(truth_pool, out.path)
    hits = [m for m in matched if m[2] >= 0.3]
    spurious = [m for m in matched if m[2] < 0.1]
    assert len(hits) == n_found and len(spurious) == out.n_false_positives
    assert sum(label != true for label, true, _ in hits) == out.n_relabeled
    ious = np.array([m[2] for m in hits])
    assert 0.7 < ious.mean() < 0.99 and ious.min() > 0.4  # jittered, not moved away

    wilder = write_autolabels_from_truth(truth_pool, tmp_path / "wild.jsonl", noise=0.15, miss_rate=0.2,
                                         false_positive_rate=0.1, label_confusion=0.25, seed=3)
    wild_ious = np.array([m[2] for m in match(truth_pool, wilder.path) if m[2] >= 0.1])
    assert wild_ious.mean() < ious.mean() - 0.05

    again = write_autolabels_from_truth(truth_pool, tmp_path / "again.jsonl", noise=0.05, miss_rate=0.2,
                                        false_positive_rate=0.1, label_confusion=0.25, seed=3)
    assert again.path.read_bytes() == out.path.read_bytes()

    scores = read_autolabels(out, labels=list(truth_pool.class_names))
    assert len(read_autolabels(out, labels=list(truth_pool.class_names), min_score=0.6)) < len(scores)


def test_autolabel_argument_errors(truth_pool, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="miss_rate must be between 0 and 1, got 1.5"):
        write_autolabels_from_truth(truth_pool, tmp_path / "a.jsonl", miss_rate=1.5)
    with pytest.raises(ConfigError, match="noise must be a number >= 0"):
        write_autolabels_from_truth(truth_pool, tmp_path / "a.jsonl", noise=-0.1)
    with pytest.raises(ConfigError, match="must end in .jsonl"):
        write_autolabels_from_truth(truth_pool, tmp_path / "a.json")
    no_size = tmp_path / "nosize.json"
    no_size.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": []}))
    with pytest.raises(ConfigError, match="nosize.json: need a readable COCO file"):
        write_autolabels_from_truth(no_size, tmp_path / "a.jsonl")
