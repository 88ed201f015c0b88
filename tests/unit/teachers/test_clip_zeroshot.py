"""The CLIP zero-shot teacher, checked against a hand computation on a tiny real open_clip model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alloop import registry
from alloop.errors import ConfigError, SampleDecodeError
from alloop.features.cache import FeatureCache
from alloop.features.open_clip import OpenClipImageEncoder
from alloop.protocols import SampleRef, Teacher, TeacherContext
from alloop.teachers.base import teacher_proba
from alloop.teachers.clip_zeroshot import DEFAULT_TEMPLATES, ClipZeroShotTeacher
from tests.helpers.tiny_clip import TINY_CLIP_NAME, make_tiny_clip, write_test_images

LABELS = ("zero", "one", "red_disc", "blue_square")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), seed=0)


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> list[SampleRef]:
    return write_test_images(tmp_path_factory.mktemp("images"))


def make_teacher(tiny, cache_dir: Path, labels=LABELS, **params) -> ClipZeroShotTeacher:
    config, ckpt = tiny
    context = TeacherContext(labels=tuple(labels), work_dir=cache_dir, cache=FeatureCache(cache_dir / "features"))
    base = {"model": TINY_CLIP_NAME, "pretrained": str(ckpt), "model_config": str(config)}
    return ClipZeroShotTeacher.from_params({**base, **params}, context=context)


def by_hand(tiny, refs, names, templates, scale=100.0) -> np.ndarray:
    """CLIP zero-shot with a prompt ensemble, straight from open_clip and numpy."""
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_NAME, pretrained=str(tiny[1]))
    model.eval()
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_NAME)
    weights = []
    with torch.no_grad():
        for name in names:
            emb = model.encode_text(tokenizer([t.format(name) for t in templates])).numpy().astype(np.float64)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            mean = emb.mean(axis=0)
            weights.append(mean / np.linalg.norm(mean))
        images = [Image.open(r.work_dir / r.data["path"]).convert("RGB") for r in refs]
        feats = np.vstack([model.encode_image(preprocess(im).unsqueeze(0)).numpy() for im in images]).astype(np.float64)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    logits = scale * feats @ np.array(weights).T
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_probabilities_equal_a_hand_computation(tiny, refs, tmp_path: Path) -> None:
    teacher = make_teacher(tiny, tmp_path)
    assert isinstance(teacher, Teacher)
    proba = teacher.predict_proba(refs)
    expected = by_hand(tiny, refs, ["zero", "one", "red disc", "blue square"], DEFAULT_TEMPLATES)
    assert proba.shape == (len(refs), len(LABELS)) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    np.testing.assert_allclose(np.log(proba), np.log(expected), atol=1e-3)  # the small ones too
    assert proba.max() - proba.min() > 0.05  # not uniform: the comparison has teeth
    # a single template and another logit scale, too
    one = make_teacher(tiny, tmp_path, templates=["a photo of a {}."], logit_scale=30.0).predict_proba(refs)
    want = by_hand(tiny, refs, ["zero", "one", "red disc", "blue square"], ["a photo of a {}."], 30.0)
    np.testing.assert_allclose(one, want, atol=1e-5)


def test_columns_follow_the_label_order(tiny, refs, tmp_path: Path) -> None:
    proba = make_teacher(tiny, tmp_path).predict_proba(refs)
    reversed_ = make_teacher(tiny, tmp_path, labels=LABELS[::-1]).predict_proba(refs)
    np.testing.assert_allclose(reversed_, proba[:, ::-1], atol=1e-6)


def test_class_names_change_the_prompts(tiny, refs, tmp_path: Path) -> None:
    default = make_teacher(tiny, tmp_path)
    assert default.prompts()[2][0] == "itap of a red disc."
    assert len(DEFAULT_TEMPLATES) == 7 and len(default.prompts()[0]) == 7
    named = make_teacher(tiny, tmp_path, class_names={"zero": "handwritten digit zero"})
    assert named.prompts()[0] == [t.replace("{}", "handwritten digit zero") for t in DEFAULT_TEMPLATES]
    assert named.prompts()[1:] == default.prompts()[1:]
    proba = named.predict_proba(refs)
    expected = by_hand(tiny, refs, ["handwritten digit zero", "one", "red disc", "blue square"], DEFAULT_TEMPLATES)
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    weights, default_weights = named.class_weights(), default.class_weights()
    assert np.abs(weights[0] - default_weights[0]).max() > 1e-3
    np.testing.assert_array_equal(weights[1:], default_weights[1:])
    assert np.abs(np.log(proba[:, 0]) - np.log(default.predict_proba(refs)[:, 0])).max() > 0.1
    assert named.fingerprint() != default.fingerprint()


@pytest.mark.parametrize(
    ("params", "mention"),
    [
        ({"templates": ["a photo of a cat."]}, "needs a '{}'"),
        ({"templates": []}, "at least one template"),
        ({"class_names": {"zero": " "}}, "must not be empty"),
        ({"logit_scale": 0}, "logit_scale"),
        ({"temperature": 2}, "unknown field 'temperature'"),
    ],
)
def test_bad_parameters_are_config_errors(tiny, tmp_path: Path, params, mention) -> None:
    with pytest.raises(ConfigError, match="clip_zeroshot") as info:
        make_teacher(tiny, tmp_path, **params)
    assert mention in str(info.value)


def test_class_names_for_unknown_labels_are_a_config_error(tiny, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not in the project: 'zro'.*'zero'"):
        make_teacher(tiny, tmp_path, class_names={"zro": "digit zero"})


def test_teacher_probabilities_are_cached_and_invalidated_by_templates(tiny, refs, tmp_path: Path) -> None:
    calls = []

    def counting(teacher: ClipZeroShotTeacher) -> ClipZeroShotTeacher:
        original = teacher.predict_proba
        teacher.predict_proba = lambda samples, progress=None: calls.append(len(samples)) or original(samples)  # type: ignore[method-assign]
        return teacher

    proba_dir = tmp_path / "proba"
    first = counting(make_teacher(tiny, tmp_path))
    p1, failures = teacher_proba(first, LABELS, refs, FeatureCache(proba_dir))
    assert calls == [len(refs)] and failures == {}
    assert first.context.cache.encoded_count == len(refs)

    # a new process: fresh objects, same folders. Neither the teacher nor the images are computed.
    second = counting(make_teacher(tiny, tmp_path))
    cache = FeatureCache(proba_dir)
    p2, _ = teacher_proba(second, LABELS, refs, cache)
    assert calls == [len(refs)] and cache.encoded_count == 0
    assert second.encoder._loaded is None and second.context.cache.encoded_count == 0
    np.testing.assert_array_equal(p2, p1)

    # other templates: new teacher fingerprint, so recomputed; the image features stay cached
    third = counting(make_teacher(tiny, tmp_path, templates=["a photo of a {}."]))
    assert third.fingerprint() != second.fingerprint()
    p3, _ = teacher_proba(third, LABELS, refs, cache)
    assert calls == [len(refs), len(refs)] and cache.encoded_count == len(refs)
    assert third.context.cache.encoded_count == 0
    assert np.abs(np.log(p3) - np.log(p1)).max() > 0.1


def test_fingerprint_follows_logit_scale_but_not_batch_size(tiny, tmp_path: Path) -> None:
    base = make_teacher(tiny, tmp_path)
    assert make_teacher(tiny, tmp_path, logit_scale=50.0).fingerprint() != base.fingerprint()
    assert make_teacher(tiny, tmp_path, batch_size=3).fingerprint() == base.fingerprint()
    assert base.fingerprint().startswith("clip_zeroshot-" + base.encoder.fingerprint())


def test_image_features_are_shared_with_an_identical_encoder(tiny, refs, tmp_path: Path) -> None:
    config, ckpt = tiny
    teacher = make_teacher(tiny, tmp_path)
    project_encoder = OpenClipImageEncoder(model=TINY_CLIP_NAME, pretrained=str(ckpt), model_config=config,
                                           batch_size=5)
    assert project_encoder.fingerprint() == teacher.encoder.fingerprint()
    feats, _ = teacher.context.cache.get(refs, project_encoder)
    assert teacher.context.cache.encoded_count == len(refs)
    proba = teacher.predict_proba(refs)
    assert teacher.context.cache.encoded_count == len(refs)  # nothing embedded twice
    logits = 100.0 * feats.astype(np.float64) @ teacher.class_weights().astype(np.float64).T
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, expected / expected.sum(axis=1, keepdims=True), atol=1e-5)


def test_unreadable_image_raises_for_the_first_failing_sample(tiny, refs, tmp_path: Path) -> None:
    for name in ("bad1.png", "bad2.png"):
        (tmp_path / name).write_bytes(b"garbage " + name.encode())
    bad = [SampleRef(n, "image", f"hash-{n}", {"path": n}, tmp_path) for n in ("bad1.png", "bad2.png")]
    with pytest.raises(SampleDecodeError, match="'bad1.png'") as info:
        make_teacher(tiny, tmp_path).predict_proba([refs[0], bad[0], refs[1], bad[1]])
    assert info.value.key == "bad1.png"


def test_non_image_samples_are_a_config_error(tiny, tmp_path: Path) -> None:
    text = SampleRef("t", "text", "h", {"text": "a zero"}, tmp_path)
    with pytest.raises(ConfigError, match="reads image samples"):
        make_teacher(tiny, tmp_path).predict_proba([text])


def test_registered_as_clip_zeroshot() -> None:
    assert registry.load("teacher", "clip_zeroshot") is ClipZeroShotTeacher
