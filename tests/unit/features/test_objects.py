"""Object (crop) features: boxes, crops, the encoders behind them, and the crop cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alloop.errors import ConfigError, SampleDecodeError
from alloop.features.cache import FeatureCache
from alloop.features.objects import crop_box, crop_hash, object_features
from alloop.features.open_clip import OpenClipImageEncoder
from alloop.features.pixels import PixelEncoder
from alloop.strategies.objects import ObjectSet
from alloop.strategies.ofds import ofds_select
from tests.helpers.tiny_clip import TINY_CLIP_NAME, make_tiny_clip

# -- fixtures ----------------------------------------------------------------------------------------


def gray_image(seed: int, w: int, h: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


@pytest.fixture
def pool(tmp_path: Path) -> tuple[dict, dict]:
    """Two grayscale PNGs (60x40 and 30x50): images mapping and the raw pixels by key."""
    raw = {"a.png": gray_image(0, 60, 40), "b.png": gray_image(1, 30, 50)}
    images = {}
    for key, arr in raw.items():
        Image.fromarray(arr).save(tmp_path / key)
        images[key] = (key, hashlib.sha256((tmp_path / key).read_bytes()).hexdigest())
    return images, raw


def reference_pixels(arr: np.ndarray, box, size: int = 4) -> np.ndarray:
    """What the pixels encoder gives for the crop ``box`` (already clipped) of ``arr``."""
    crop = Image.fromarray(arr).crop(box)
    if crop.size != (size, size):
        crop = crop.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(crop, np.float32).reshape(-1) / 255


# -- boxes -------------------------------------------------------------------------------------------


def test_crop_box_rounds_outwards_and_pads():
    assert crop_box((10.2, 5.7, 20.1, 15.0), pad=2) == (8, 3, 23, 17)
    assert crop_box((10, 5, 20, 15), pad=0) == (10, 5, 20, 15)
    assert crop_box((5, 5, 5, 5), pad=0) == (5, 5, 6, 6)  # at least one pixel
    assert crop_hash("h", (1, 2, 3, 4)) == crop_hash("h", crop_box((1.5, 2.5, 2.5, 3.5), pad=0))
    assert crop_hash("h", (1, 2, 3, 4)) != crop_hash("g", (1, 2, 3, 4))


# -- pixels ------------------------------------------------------------------------------------------


def test_pixel_features_of_crops_are_exact(pool, tmp_path):
    images, raw = pool
    keys = ["a.png", "b.png", "a.png", "a.png", "b.png"]
    boxes = np.array([
        [10, 5, 30, 25],       # inside
        [0.4, 0.2, 7.6, 9.9],  # rounded outwards, padded, clipped at the top-left
        [50, 30, 70, 45],      # runs off the bottom-right: clipped
        [100, 100, 120, 130],  # entirely outside: the nearest corner pixel
        [3, 3, 3, 3],          # a point: 2x2 (floor - 1 to ceil + 1)
    ])
    feats = object_features(images, keys, boxes, PixelEncoder(size=4), tmp_path / "cache",
                            pad=1, work_dir=tmp_path)
    assert feats.shape == (5, 16) and feats.dtype == np.float32
    expected = [
        reference_pixels(raw["a.png"], (9, 4, 31, 26)),
        reference_pixels(raw["b.png"], (0, 0, 9, 11)),
        reference_pixels(raw["a.png"], (49, 29, 60, 40)),
        reference_pixels(raw["a.png"], (59, 39, 60, 40)),
        reference_pixels(raw["b.png"], (2, 2, 4, 4)),
    ]
    np.testing.assert_array_equal(feats, np.stack(expected))


def test_xywh_boxes_give_the_same_crops(pool, tmp_path):
    images, _ = pool
    xyxy = object_features(images, ["a.png", "b.png"], [[10, 5, 30, 25], [2, 2, 20, 30]],
                           PixelEncoder(size=4), work_dir=tmp_path)
    xywh = object_features(images, ["a.png", "b.png"], [[10, 5, 20, 20], [2, 2, 18, 28]],
                           PixelEncoder(size=4), work_dir=tmp_path, box_format="xywh")
    np.testing.assert_array_equal(xyxy, xywh)
    with pytest.raises(ConfigError, match="box_format"):
        object_features(images, ["a.png"], [[0, 0, 1, 1]], PixelEncoder(), box_format="cxcywh")


def test_pil_images_give_the_same_features_as_paths(pool, tmp_path):
    images, raw = pool
    as_pil = {k: (Image.fromarray(raw[k]), h) for k, (_, h) in images.items()}
    boxes = [[10, 5, 30, 25], [2, 2, 20, 30]]
    a = object_features(images, ["a.png", "b.png"], boxes, PixelEncoder(size=4), work_dir=tmp_path)
    b = object_features(as_pil, ["a.png", "b.png"], boxes, PixelEncoder(size=4))
    np.testing.assert_array_equal(a, b)


def test_crops_are_cached_per_content_box_and_encoder(pool, tmp_path):
    images, _ = pool
    cache = FeatureCache(tmp_path / "cache")
    keys = ["a.png", "b.png", "a.png", "a.png"]
    boxes = [[10, 5, 30, 25], [2, 2, 20, 30], [0, 0, 8, 8], [10.3, 5.2, 29.9, 24.6]]  # last = first
    first = object_features(images, keys, boxes, PixelEncoder(size=4), cache, work_dir=tmp_path)
    assert cache.encoded_count == 3  # the duplicate crop is encoded once
    np.testing.assert_array_equal(first[0], first[3])
    folders = [p.name for p in (tmp_path / "cache").iterdir()]
    assert folders == [f"crops-v1-{PixelEncoder(size=4).fingerprint()}"]
    again = object_features(images, keys[::-1], boxes[::-1], PixelEncoder(size=4), cache, work_dir=tmp_path)
    assert cache.encoded_count == 3  # nothing re-encoded, order follows the input
    np.testing.assert_array_equal(again, first[::-1])
    fresh = FeatureCache(tmp_path / "cache")  # another process, same folder
    object_features(images, [*keys, "b.png"], [*boxes, [5, 5, 9, 9]], PixelEncoder(size=4), fresh,
                    work_dir=tmp_path)
    assert fresh.encoded_count == 1  # only the new box
    other = object_features(images, keys, boxes, PixelEncoder(size=3), fresh, work_dir=tmp_path)
    assert other.shape == (4, 9) and fresh.encoded_count == 4  # another encoder, other rows
    object_features(images, keys[:1], boxes[:1], PixelEncoder(size=4), fresh, pad=0, work_dir=tmp_path)
    assert fresh.encoded_count == 5  # another padding is another crop


def test_changed_image_content_is_re_encoded(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    Image.fromarray(gray_image(0, 20, 20)).save(tmp_path / "x.png")
    a = object_features({"x": ("x.png", "hash-1")}, ["x"], [[2, 2, 10, 10]], PixelEncoder(size=2), cache,
                        work_dir=tmp_path)
    Image.fromarray(gray_image(1, 20, 20)).save(tmp_path / "x.png")
    b = object_features({"x": ("x.png", "hash-2")}, ["x"], [[2, 2, 10, 10]], PixelEncoder(size=2), cache,
                        work_dir=tmp_path)
    assert cache.encoded_count == 2 and not np.array_equal(a, b)


def test_errors(pool, tmp_path):
    images, _ = pool
    enc = PixelEncoder(size=2)
    with pytest.raises(ConfigError, match=r"shape \(1, 4\)"):
        object_features(images, ["a.png"], [[0, 0, 1]], enc)
    with pytest.raises(ConfigError, match="x1 >= x0"):
        object_features(images, ["a.png"], [[5, 0, 1, 4]], enc)
    with pytest.raises(ConfigError, match="finite"):
        object_features(images, ["a.png"], [[0, 0, np.nan, 4]], enc)
    with pytest.raises(ConfigError, match="not in images"):
        object_features(images, ["zz.png"], [[0, 0, 1, 1]], enc)
    with pytest.raises(ConfigError, match="content hash"):
        object_features({"a.png": "a.png"}, ["a.png"], [[0, 0, 1, 1]], enc)
    with pytest.raises(ConfigError, match="fingerprint"):
        object_features(images, ["a.png"], [[0, 0, 1, 1]], object())
    with pytest.raises(ConfigError, match="pad"):
        object_features(images, ["a.png"], [[0, 0, 1, 1]], enc, pad=-1)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(SampleDecodeError) as err:
        object_features({**images, "bad.png": ("bad.png", "h")}, ["a.png", "bad.png"],
                        [[0, 0, 4, 4], [0, 0, 4, 4]], enc, work_dir=tmp_path)
    assert err.value.key == "bad.png"
    assert object_features(images, [], np.empty((0, 4)), enc).shape[0] == 0


# -- open_clip, end to end ---------------------------------------------------------------------------


def test_tiny_open_clip_crops_then_ofds(tmp_path):
    config, ckpt = make_tiny_clip(tmp_path / "clip")
    encoder = OpenClipImageEncoder(model=TINY_CLIP_NAME, pretrained=str(ckpt), model_config=config)
    rng = np.random.default_rng(0)
    images, keys, boxes, labels = {}, [], [], []
    for i in range(12):  # red discs (class 0) and blue squares (class 1, rare) on noise
        arr = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
        for j in range(2 if i % 4 else 1):
            x, y = 5 + 35 * j, 10
            cls = 1 if (i == 5 and j == 0) else 0
            arr[y : y + 30, x : x + 30] = (20, 40, 210) if cls else (220, 30, 30)
            keys.append(f"img{i}")
            boxes.append([x, y, x + 30, y + 30])
            labels.append(cls)
        Image.fromarray(arr).save(tmp_path / f"img{i}.png")
        images[f"img{i}"] = (f"img{i}.png", f"content-{i}")
    cache = FeatureCache(tmp_path / "cache")
    feats = object_features(images, keys, boxes, encoder, cache, work_dir=tmp_path)
    assert feats.shape == (len(keys), 64) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    # the same as encoding the crops by hand
    (tmp_path / "manual").mkdir()
    refs = []
    from alloop.protocols import SampleRef

    for n, (key, box) in enumerate(zip(keys[:3], boxes[:3])):
        crop = Image.open(tmp_path / images[key][0]).convert("RGB").crop(crop_box(box, 4))
        crop.save(tmp_path / "manual" / f"{n}.png")
        refs.append(SampleRef(str(n), "image", str(n), {"path": f"{n}.png"}, tmp_path / "manual"))
    np.testing.assert_allclose(feats[:3], encoder.encode(refs), atol=1e-5)
    again = object_features(images, keys, boxes, encoder, cache, work_dir=tmp_path)
    assert cache.encoded_count == len(keys)  # second call read everything from the cache
    np.testing.assert_array_equal(again, feats)
    # the features feed OFDS directly: the rare class's image is selected
    positions = np.array([int(k[3:]) for k in keys])
    objects = ObjectSet(image=positions, label=np.array(labels), score=np.ones(len(keys), np.float32),
                        features=feats, box=np.array(boxes, np.float32))
    pos, _ = ofds_select(objects, 3, n_samples=12, rng=0)
    assert 5 in pos.tolist()
