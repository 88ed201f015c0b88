"""The spine encoders: pixels (images), vector (stored rows), hashing (texts)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from alloop.config import BundledSource
from alloop.errors import ConfigError, SampleDecodeError
from alloop.features.hashing import HashingTextEncoder
from alloop.features.pixels import PixelEncoder
from alloop.features.vector import VectorEncoder
from alloop.pool.bundled import scan_bundled
from alloop.protocols import Encoder, SampleRef
from alloop.registry import create

FINGERPRINT = re.compile(r"^[a-z]+-v\d+-[0-9a-f]{12}$")


def image_ref(key: str, path: Path | str, work_dir: Path) -> SampleRef:
    return SampleRef(key=key, kind="image", content_hash=key, data={"path": str(path)}, work_dir=work_dir)


def text_ref(key: str, text: str, work_dir: Path = Path(".")) -> SampleRef:
    return SampleRef(key=key, kind="text", content_hash=key, data={"text": text}, work_dir=work_dir)


def vector_ref(key: str, rel: str, row: int, work_dir: Path) -> SampleRef:
    return SampleRef(key=key, kind="vector", content_hash=key, data={"vectors": rel, "row": row}, work_dir=work_dir)


# --- pixels -----------------------------------------------------------------------------------


def test_pixels_of_bundled_digits_equal_sklearn_data(tmp_path: Path) -> None:
    scan = scan_bundled(BundledSource(name="digits"), tmp_path)
    refs = [SampleRef(i.key, i.kind, i.content_hash, i.data, tmp_path) for i in scan.items]
    feats = PixelEncoder().encode(refs)
    order = [int(i.key.split("/")[1][:4]) for i in scan.items]
    expected = load_digits().data[order] / 16.0
    assert feats.shape == (1797, 64) and feats.dtype == np.float32
    assert np.abs(feats - expected).max() <= 0.5 / 255 + 1e-6
    assert feats.min() == 0.0 and feats.max() == 1.0


def test_resize_of_a_32x32_image(tmp_path: Path) -> None:
    blocks = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(np.kron(blocks, np.ones((8, 8), np.uint8))).save(tmp_path / "b.png")
    ref = image_ref("b.png", tmp_path / "b.png", tmp_path)
    box = PixelEncoder(size=4, resample="box").encode([ref])
    assert np.array_equal(box[0], blocks.reshape(-1).astype(np.float32) / 255)
    default = PixelEncoder().encode([ref])[0].reshape(8, 8)
    assert default.shape == (8, 8)
    assert np.all(np.diff(default.mean(axis=1)) > 0)  # rows get brighter top to bottom, as blocks do


def test_no_resampling_when_size_already_matches(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "n.png")
    feats = PixelEncoder(size=8, resample="lanczos").encode([image_ref("n", tmp_path / "n.png", tmp_path)])
    assert np.array_equal(feats[0], pixels.reshape(-1).astype(np.float32) / 255)


def test_color_and_non_square_images_become_gray_squares(tmp_path: Path) -> None:
    Image.new("RGB", (20, 10), (255, 0, 0)).save(tmp_path / "red.png")
    feats = PixelEncoder(size=6).encode([image_ref("red", "red.png", tmp_path)])  # relative to work_dir
    assert feats.shape == (1, 36)
    assert np.allclose(feats, 76 / 255)  # ITU-R 601 luma of pure red


def test_sixteen_bit_images_keep_their_range(tmp_path: Path) -> None:
    values = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")
    feats = PixelEncoder(size=2).encode([image_ref("deep", tmp_path / "deep.png", tmp_path)])
    assert np.allclose(feats[0], values.reshape(-1) / 65535, atol=1e-6)
    shrunk = PixelEncoder(size=1, resample="box").encode([image_ref("deep", tmp_path / "deep.png", tmp_path)])
    assert np.allclose(shrunk, values.mean() / 65535, atol=1e-5)


def test_corrupt_image_raises_sample_decode_error_naming_the_key(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("L", (64, 64), 128).save(good)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "big.png")
    data = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    refs = [image_ref("good.png", good, tmp_path), image_ref("cats/cut.png", tmp_path / "cut.png", tmp_path)]
    with pytest.raises(SampleDecodeError) as exc:
        PixelEncoder().encode(refs)
    assert exc.value.key == "cats/cut.png"
    assert "'cats/cut.png'" in str(exc.value) and "OSError" in exc.value.reason
    with pytest.raises(SampleDecodeError, match="'gone'.*FileNotFoundError"):
        PixelEncoder().encode([image_ref("gone", tmp_path / "nope.png", tmp_path)])


def test_pixels_refuse_non_image_samples_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        PixelEncoder().encode([vector_ref("v1", "pool/x.npy", 0, tmp_path)])
    assert "'vector' sample" in str(exc.value) and 'features.name = "vector"' in str(exc.value)
    with pytest.raises(ConfigError, match='features.name = "hashing"'):
        PixelEncoder().encode([text_ref("t1", "hello")])


# --- vector -----------------------------------------------------------------------------------


def test_vector_encoder_returns_the_exact_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    (tmp_path / "pool").mkdir()
    np.save(tmp_path / "pool" / "a.npy", a)
    np.save(tmp_path / "pool" / "b.npy", b)
    refs = [
        vector_ref("a5", "pool/a.npy", 5, tmp_path),
        vector_ref("b0", str(tmp_path / "pool" / "b.npy"), 0, tmp_path),  # absolute path works too
        vector_ref("a1", "pool/a.npy", 1, tmp_path),
        vector_ref("b3", "pool/b.npy", 3, tmp_path),
    ]
    feats = VectorEncoder().encode(refs)
    assert feats.dtype == np.float32
    assert np.array_equal(feats, np.stack([a[5], b[0], a[1], b[3]]))
    assert VectorEncoder().encode([]).shape == (0, 0)


def test_vector_encoder_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((3, 2), np.float32))
    np.save(tmp_path / "c.npy", np.zeros((3, 5), np.float32))
    with pytest.raises(SampleDecodeError, match="'k'.*row 3 is out of range.*3 rows"):
        VectorEncoder().encode([vector_ref("k", "a.npy", 3, tmp_path)])
    with pytest.raises(SampleDecodeError, match="'m'.*cannot read"):
        VectorEncoder().encode([vector_ref("m", "missing.npy", 0, tmp_path)])
    with pytest.raises(SampleDecodeError, match="'c0'.*5 features per row but other samples have 2"):
        VectorEncoder().encode([vector_ref("a0", "a.npy", 0, tmp_path), vector_ref("c0", "c.npy", 0, tmp_path)])
    with pytest.raises(ConfigError, match="'image' sample.*features.name = \"pixels\""):
        VectorEncoder().encode([image_ref("i", tmp_path / "x.png", tmp_path)])


# --- hashing ----------------------------------------------------------------------------------

TEXTS = ["The cat sat on the mat.", "A dog barked at the mailman", "the CAT sat", "", "!!!"]


def test_hashing_is_deterministic_normalised_and_discriminative() -> None:
    refs = [text_ref(str(i), t) for i, t in enumerate(TEXTS)]
    feats = HashingTextEncoder().encode(refs)
    assert feats.shape == (5, 1024) and feats.dtype == np.float32
    assert np.array_equal(feats, HashingTextEncoder().encode(refs))
    norms = np.linalg.norm(feats, axis=1)
    assert np.allclose(norms[:3], 1.0, atol=1e-6)
    assert np.all(feats[3:] == 0)  # no token: zero row
    assert feats.min() >= 0  # alternate_sign False
    assert not np.array_equal(feats[0], feats[1]) and not np.array_equal(feats[0], feats[2])
    assert float(feats[0] @ feats[2]) > float(feats[0] @ feats[1])  # shared words -> closer


def test_hashing_is_stable_across_processes(tmp_path: Path) -> None:
    feats = HashingTextEncoder(n_features=64).encode([text_ref("0", TEXTS[0])])
    code = (
        "import numpy as np; from pathlib import Path; from alloop.protocols import SampleRef;"
        "from alloop.features.hashing import HashingTextEncoder as H;"
        f"r=SampleRef('0','text','0',{{'text':{TEXTS[0]!r}}},Path('.'));"
        f"np.save({str(tmp_path / 'f.npy')!r}, H(n_features=64).encode([r]))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert np.array_equal(np.load(tmp_path / "f.npy"), feats)


def test_hashing_params_change_the_output() -> None:
    refs = [text_ref("0", "Hello World"), text_ref("1", "hello world")]
    lower = HashingTextEncoder().encode(refs)
    assert np.array_equal(lower[0], lower[1])  # same tokens once lowercased
    cased = HashingTextEncoder(lowercase=False).encode(refs)
    assert not np.array_equal(cased[0], cased[1])
    unigrams = HashingTextEncoder(ngram_range=(1, 1)).encode(refs)
    assert (unigrams[1] > 0).sum() == 2 and (lower[1] > 0).sum() == 3
    assert HashingTextEncoder(n_features=16).encode(refs).shape == (2, 16)


def test_hashing_refuses_non_text_samples(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'hashing' encoder reads text samples.*'image' sample"):
        HashingTextEncoder().encode([image_ref("i", tmp_path / "x.png", tmp_path)])


# --- shared: fingerprints, parameters, registry ------------------------------------------------


def test_fingerprints_follow_parameters() -> None:
    prints = {
        PixelEncoder().fingerprint(), PixelEncoder(size=16).fingerprint(),
        PixelEncoder(resample="box").fingerprint(), HashingTextEncoder().fingerprint(),
        HashingTextEncoder(n_features=2048).fingerprint(), HashingTextEncoder(ngram_range=(1, 1)).fingerprint(),
        HashingTextEncoder(alternate_sign=True).fingerprint(), VectorEncoder().fingerprint(),
    }
    assert len(prints) == 8
    assert all(FINGERPRINT.match(p) for p in prints)
    assert PixelEncoder(size=8).fingerprint() == PixelEncoder.from_params({}).fingerprint()
    assert VectorEncoder().fingerprint() == VectorEncoder.from_params({}).fingerprint()
    assert VectorEncoder().fingerprint().startswith("vector-v1-")


@pytest.mark.parametrize(
    ("cls", "params", "mentions"),
    [
        (PixelEncoder, {"sise": 8}, ["'sise'", "did you mean 'size'"]),
        (PixelEncoder, {"size": 0}, ["size", "greater than or equal to 1"]),
        (PixelEncoder, {"resample": "cubic"}, ["resample", "'cubic'"]),
        (HashingTextEncoder, {"n_features": -1}, ["n_features"]),
        (HashingTextEncoder, {"ngram_range": [2, 1]}, ["ngram_range", "min_n <= max_n"]),
        (HashingTextEncoder, {"n_feature": 10}, ["did you mean 'n_features'"]),
        (VectorEncoder, {"dim": 3}, ["takes no parameters", "'dim'"]),
    ],
)
def test_bad_params_raise_config_error(cls, params, mentions) -> None:
    with pytest.raises(ConfigError) as exc:
        cls.from_params(params)
    for text in mentions:
        assert text in str(exc.value)


def test_registry_builds_encoders_by_name() -> None:
    enc = create("encoder", "hashing", {"n_features": 32, "ngram_range": [1, 3]})
    assert isinstance(enc, HashingTextEncoder) and enc.ngram_range == (1, 3)
    assert isinstance(create("encoder", "pixels", {"size": 4}), PixelEncoder)
    assert isinstance(create("encoder", "vector"), VectorEncoder)
    for enc in (PixelEncoder(), VectorEncoder(), HashingTextEncoder()):
        assert isinstance(enc, Encoder)
