"""The open_clip encoder, on a tiny real open_clip model saved and reloaded as a local checkpoint."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from alloop import registry
from alloop.errors import ConfigError, SampleDecodeError
from alloop.features.cache import FeatureCache
from alloop.features.open_clip import OpenClipImageEncoder
from alloop.protocols import Encoder, SampleRef
from tests.helpers.files import overwrite
from tests.helpers.network import refuse_network
from tests.helpers.progress import RecordingProgress
from tests.helpers.tiny_clip import (
    TINY_CLIP_CONFIG,
    TINY_CLIP_NAME,
    make_tiny_clip,
    write_test_images,
)

FINGERPRINT = re.compile(r"^open_clip-v1-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(config, checkpoint of seed 0, checkpoint of seed 1)."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    config, ckpt0 = make_tiny_clip(folder, seed=0)
    _, ckpt1 = make_tiny_clip(folder, seed=1)
    return config, ckpt0, ckpt1


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> list[SampleRef]:
    return write_test_images(tmp_path_factory.mktemp("images"))


def encoder(tiny: tuple[Path, Path, Path], ckpt: Path | None = None, **params) -> OpenClipImageEncoder:
    config, ckpt0, _ = tiny
    return OpenClipImageEncoder(model=TINY_CLIP_NAME, pretrained=str(ckpt or ckpt0), model_config=config, **params)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make huggingface_hub fail at once instead of retrying for ~45 s without network."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# --- loading and embeddings -------------------------------------------------------------------


def test_embeddings_are_those_of_the_saved_weights(tiny, refs) -> None:
    import open_clip
    import torch
    from PIL import Image

    feats = encoder(tiny).encode(refs)
    assert isinstance(encoder(tiny), Encoder)
    assert feats.shape == (len(refs), TINY_CLIP_CONFIG["embed_dim"]) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    # the same numbers straight from open_clip with the checkpoint's state dict
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_NAME, pretrained=None)
    model.load_state_dict(torch.load(tiny[1], weights_only=True))
    model.eval()
    images = [Image.open(r.work_dir / r.data["path"]).convert("RGB") for r in refs]
    with torch.inference_mode():
        expected = model.encode_image(torch.stack([preprocess(im) for im in images]), normalize=True).numpy()
    np.testing.assert_allclose(feats, expected, atol=1e-5)
    # distinct images get distinct embeddings (the model is not degenerate)
    assert np.abs(feats[0] - feats[-1]).max() > 1e-3


def test_deterministic_and_batch_size_does_not_matter(tiny, refs) -> None:
    a = encoder(tiny).encode(refs)
    b = encoder(tiny).encode(refs)
    one_by_one = encoder(tiny, batch_size=1).encode(refs)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(one_by_one, a, atol=1e-5)


def test_progress_reports_every_image(tiny, refs) -> None:
    progress = RecordingProgress()
    encoder(tiny, batch_size=4).encode(refs, progress)
    assert progress.tasks == [[f"Encoding images (open_clip {TINY_CLIP_NAME})", len(refs), len(refs)]]


def test_normalize_false_gives_raw_embeddings(tiny, refs) -> None:
    raw = encoder(tiny, normalize=False).encode(refs)
    unit = encoder(tiny).encode(refs)
    norms = np.linalg.norm(raw, axis=1)
    assert np.abs(norms - 1.0).max() > 1e-2
    np.testing.assert_allclose(raw / norms[:, None], unit, atol=1e-5)
    assert encoder(tiny, normalize=False).fingerprint() != encoder(tiny).fingerprint()


def test_encode_text_gives_unit_rows(tiny) -> None:
    enc = encoder(tiny)
    emb = enc.encode_text(["a photo of a zero.", "a photo of a one.", "a photo of a zero."])
    assert emb.shape == (3, 64) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-6)
    assert np.abs(emb[0] - emb[1]).max() > 1e-4
    assert not np.allclose(np.linalg.norm(enc.encode_text(["a zero"], normalize=False), axis=1), 1.0)


def test_corrupt_image_names_the_key(tiny, refs, tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    bad = SampleRef("bad.png", "image", "bad-hash", {"path": "bad.png"}, tmp_path)
    with pytest.raises(SampleDecodeError, match="'bad.png'") as info:
        encoder(tiny).encode([refs[0], bad])
    assert info.value.key == "bad.png"
    feats, failures = FeatureCache(tmp_path / "cache").get([refs[0], bad, refs[1]], encoder(tiny))
    assert list(failures) == ["bad.png"] and feats.shape == (2, 64)


def test_non_image_sample_is_a_config_error(tiny) -> None:
    text = SampleRef("t1", "text", "h", {"text": "hello"}, Path("."))
    with pytest.raises(ConfigError, match="'open_clip' encoder reads image samples.*'text' sample"):
        encoder(tiny).encode([text])


# --- the feature cache and fingerprints --------------------------------------------------------


def test_cache_hit_on_second_run_and_invalidated_by_new_weights(tiny, refs, tmp_path: Path) -> None:
    first = FeatureCache(tmp_path / "cache")
    feats0, _ = first.get(refs, encoder(tiny))
    assert first.encoded_count == len(refs)

    again = FeatureCache(tmp_path / "cache")  # a new process: only the files on disk
    enc = encoder(tiny)
    cached, failures = again.get(refs, enc)
    assert again.encoded_count == 0 and failures == {}
    assert enc._loaded is None  # the model was never even loaded
    assert np.array_equal(cached, feats0)

    # the same bytes under another path: same fingerprint, still cached
    copy = shutil.copy(tiny[1], tmp_path / "moved.pt")
    assert encoder(tiny, Path(copy)).fingerprint() == enc.fingerprint()

    new_weights = encoder(tiny, tiny[2])
    assert new_weights.fingerprint() != enc.fingerprint()
    feats1, _ = again.get(refs, new_weights)
    assert again.encoded_count == len(refs)
    assert np.abs(feats1 - feats0).max() > 1e-2


def test_overwritten_checkpoint_changes_the_fingerprint(tiny, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    shutil.copy(tiny[1], path)
    before = encoder(tiny, path).fingerprint()
    overwrite(tiny[2], path)
    assert encoder(tiny, path).fingerprint() != before


def test_fingerprint_follows_weights_and_config_not_batch_or_device(tiny, tmp_path: Path) -> None:
    tags = {
        OpenClipImageEncoder().fingerprint(),
        OpenClipImageEncoder(pretrained="laion2b_s34b_b79k").fingerprint(),
        OpenClipImageEncoder(model="ViT-B-16", pretrained="openai").fingerprint(),
    }
    assert len(tags) == 3 and all(FINGERPRINT.match(f) for f in tags)
    assert OpenClipImageEncoder(pretrained="OpenAI").fingerprint() == OpenClipImageEncoder().fingerprint()
    base = encoder(tiny).fingerprint()
    assert encoder(tiny, batch_size=3, device="cuda").fingerprint() == base
    # another config content under the same model name: another fingerprint
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alt = {**TINY_CLIP_CONFIG, "vision_cfg": {**TINY_CLIP_CONFIG["vision_cfg"], "patch_size": 8}}
    (tmp_path / "a" / "alloop-tiny-alt.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    (tmp_path / "b" / "alloop-tiny-alt.json").write_text(json.dumps(alt))
    prints = [
        OpenClipImageEncoder(model="alloop-tiny-alt", pretrained=str(tiny[1]),
                             model_config=tmp_path / d / "alloop-tiny-alt.json").fingerprint()
        for d in ("a", "b")
    ]
    assert prints[0] != prints[1]


# --- errors a user can act on ------------------------------------------------------------------


def test_offline_hub_tag_fails_fast_with_the_local_checkpoint_hint(offline, refs, monkeypatch) -> None:
    attempts = refuse_network(monkeypatch)
    with pytest.raises(ConfigError) as info:
        OpenClipImageEncoder(model="ViT-B-32", pretrained="openai").encode(refs[:1])
    msg = str(info.value)
    assert "could not be fetched" in msg and "'openai'" in msg
    assert 'pretrained = "/path/to/file.pt"' in msg and "torch.save(model.state_dict(), path)" in msg
    assert attempts == []  # fast: offline, the hub was never tried, so there were no retries to sit out


def test_unknown_tag_of_a_custom_model_suggests_a_checkpoint(tiny, refs) -> None:
    config = tiny[0]
    with pytest.raises(ConfigError, match="neither a pretrained tag of 'alloop-tiny-clip'.*torch.save"):
        OpenClipImageEncoder(model=TINY_CLIP_NAME, pretrained="openai", model_config=config).encode(refs[:1])
    with pytest.raises(ConfigError, match="No checkpoint file at pretrained = '/no/such/weights.pt'"):
        OpenClipImageEncoder(model=TINY_CLIP_NAME, pretrained="/no/such/weights.pt",
                             model_config=config).encode(refs[:1])


def test_unknown_model_name_lists_models_and_mentions_model_config(refs) -> None:
    with pytest.raises(ConfigError, match="Unknown open_clip model 'ViT-Q-99'.*'ViT-B-32'.*model_config") as info:
        OpenClipImageEncoder(model="ViT-Q-99").encode(refs[:1])
    assert "open_clip.list_models()" in str(info.value)


def test_checkpoint_of_another_architecture_is_a_config_error(tiny, refs, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="Cannot load open_clip model 'alloop-tiny-clip'"):
        encoder(tiny, garbage).encode(refs[:1])
    import torch

    partial = torch.load(tiny[1], weights_only=True)
    partial.pop("text_projection")
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ConfigError, match="state dict of that exact architecture"):
        encoder(tiny, tmp_path / "partial.pt").encode(refs[:1])


def test_config_file_name_must_match_the_model(tiny, tmp_path: Path) -> None:
    other = tmp_path / "my-clip.json"
    shutil.copy(tiny[0], other)
    with pytest.raises(ConfigError, match="defines model 'my-clip', but model = 'alloop-tiny-clip'"):
        OpenClipImageEncoder(model=TINY_CLIP_NAME, pretrained=str(tiny[1]), model_config=other).fingerprint()
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="Cannot read the open_clip model config"):
        OpenClipImageEncoder(model="broken", pretrained=str(tiny[1]),
                             model_config=tmp_path / "broken.json").fingerprint()


@pytest.mark.parametrize(
    ("params", "mention"),
    [
        ({"pretrained": None}, "random weights"),
        ({"batch_size": 0}, "batch_size"),
        ({"modle": "ViT-B-32"}, "'modle'"),
    ],
)
def test_bad_parameters_are_config_errors(params, mention) -> None:
    with pytest.raises(ConfigError, match=re.escape(mention)):
        OpenClipImageEncoder.from_params(params)


def test_registered_as_open_clip(tiny, refs) -> None:
    config, ckpt0, _ = tiny
    enc = registry.create("encoder", "open_clip",
                          {"model": TINY_CLIP_NAME, "pretrained": str(ckpt0), "model_config": str(config)})
    assert isinstance(enc, OpenClipImageEncoder)
    np.testing.assert_allclose(enc.encode(refs[:2]), encoder(tiny).encode(refs[:2]), atol=1e-6)
