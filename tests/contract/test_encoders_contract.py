"""Contract every registered encoder must honour (a new encoder needs a harness here).

A harness (``HARNESSES``) says how to build an encoder offline on real inputs: its parameters
(model weights the suite creates and saves locally: a tiny open_clip CLIP, timm test networks,
a tiny BERT), real samples (PNG images, texts, ``.npy`` vectors) including two samples with the
same content, an unreadable sample, and the parameter changes that change the output - with
which the fingerprint must change. Parameters that only change float rounding (batch size,
device) are listed as neutral; every parameter of a pydantic-based encoder must be one or the
other, so a new parameter cannot slip out of the cache key.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alloop import registry
from alloop.errors import SampleDecodeError
from alloop.protocols import Encoder, PluginContext, SampleRef
from tests.contract._coverage import assert_builtins_registered, assert_every_plugin_has_a_harness
from tests.contract._tiny_models import TINY_CLIP_B_NAME, make_tiny_clip_b

NAMES = registry.available("encoder")
BUILTINS = {"pixels", "vector", "hashing", "open_clip", "timm", "transformers"}


@dataclass(frozen=True)
class Variant:
    """A change of parameters that changes the output; ``covers`` names the parameters it varies."""

    covers: frozenset[str]
    params: dict[str, Any]


@dataclass
class Harness:
    name: str
    params: dict[str, Any]
    samples: list[SampleRef]
    unreadable: SampleRef
    #: indices of two samples with the same content under different keys
    same_content: tuple[int, int]
    variants: list[Variant] = field(default_factory=list)
    #: parameters that change the output only by float rounding
    neutral: frozenset[str] = frozenset({"batch_size", "device"})
    #: parameters that cannot be varied offline, with the reason
    offline_only: dict[str, str] = field(default_factory=dict)
    #: ``swap_weights(True)`` rewrites the weight file(s) of ``params`` in place with other weights,
    #: ``swap_weights(False)`` puts the original ones back (weight-based encoders only)
    swap_weights: Callable[[bool], None] | None = None

    def make(self, **override: Any) -> Any:
        return registry.create("encoder", self.name, {**self.params, **override}, context=PluginContext())


# ---------------------------------------------------------------------------------------------
# real inputs
# ---------------------------------------------------------------------------------------------
def image_samples(folder: Path) -> tuple[list[SampleRef], SampleRef]:
    """Five real PNGs of several sizes, a byte copy of the first under another key, a corrupt PNG."""
    from tests.helpers.tiny_clip import write_test_images

    refs = write_test_images(folder, n_digits=3)
    shutil.copyfile(folder / refs[0].data["path"], folder / "copy.png")
    refs.append(SampleRef("copy-of-digit0", "image", refs[0].content_hash, {"path": "copy.png"}, folder))
    good = (folder / refs[1].data["path"]).read_bytes()
    (folder / "corrupt.png").write_bytes(good[: len(good) // 2])  # a truncated PNG
    return refs, SampleRef("corrupt.png", "image", "corrupt", {"path": "corrupt.png"}, folder)


TEXTS = ["a great movie", "The Plot is boring, and the acting was BAD.", "funny",
         "This film is not very good but the story is excellent", "a great movie"]


def text_samples() -> tuple[list[SampleRef], SampleRef]:
    refs = [SampleRef(f"t{i}", "text", f"h{i}", {"text": t}, Path(".")) for i, t in enumerate(TEXTS)]
    return refs, SampleRef("no-text", "text", "h-none", {"body": "the text is missing"}, Path("."))


def vector_samples(folder: Path) -> tuple[list[SampleRef], SampleRef]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(folder / "a.npy", rng.standard_normal((4, 6)).astype(np.float32))
    np.save(folder / "b.npy", rng.standard_normal((3, 6)).astype(np.float32))
    rows = [("a.npy", 0), ("a.npy", 1), ("b.npy", 2), ("a.npy", 3), ("a.npy", 1)]
    refs = [SampleRef(f"v{i}", "vector", f"{f}:{r}", {"vectors": f, "row": r}, folder) for i, (f, r) in enumerate(rows)]
    return refs, SampleRef("missing-file", "vector", "x", {"vectors": "gone.npy", "row": 0}, folder)


# ---------------------------------------------------------------------------------------------
# weights made here, offline
# ---------------------------------------------------------------------------------------------
def _open_clip(root: Path) -> Harness:
    from tests.helpers.tiny_clip import TINY_CLIP_NAME, make_tiny_clip

    config, ckpt0 = make_tiny_clip(root / "clip", seed=0)
    _, ckpt1 = make_tiny_clip(root / "clip", seed=1)
    config_b, ckpt_b = make_tiny_clip_b(root / "clip")
    live = root / "clip" / "live.pt"  # the checkpoint the harness rewrites in place
    shutil.copyfile(ckpt0, live)
    refs, bad = image_samples(root / "images")
    return Harness(
        "open_clip", {"model": TINY_CLIP_NAME, "pretrained": str(live), "model_config": str(config)}, refs, bad, (0, 5),
        variants=[
            Variant(frozenset({"pretrained"}), {"pretrained": str(ckpt1)}),
            Variant(frozenset({"model", "config_file"}),
                    {"model": TINY_CLIP_B_NAME, "pretrained": str(ckpt_b), "model_config": str(config_b)}),
            Variant(frozenset({"normalize"}), {"normalize": False}),
        ],
        swap_weights=lambda other: shutil.copyfile(ckpt1 if other else ckpt0, live),
    )


def _timm(root: Path) -> Harness:
    import timm
    import torch

    folder = root / "timm"
    folder.mkdir(parents=True)

    def save(arch: str, seed: int, name: str) -> Path:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            torch.save(timm.create_model(arch, num_classes=0).state_dict(), folder / name)
        return folder / name

    original, other = save("test_efficientnet", 0, "seed0.pth"), save("test_efficientnet", 1, "seed1.pth")
    live = folder / "live.pth"  # the checkpoint the harness rewrites in place
    shutil.copyfile(original, live)
    resnet = save("test_resnet", 0, "resnet.pth")
    refs, bad = image_samples(root / "images")
    return Harness(
        "timm", {"model": "test_efficientnet", "weights": str(live), "image_size": 32}, refs, bad, (0, 5),
        variants=[
            Variant(frozenset({"weights"}), {"weights": str(other)}),
            Variant(frozenset({"model"}), {"model": "test_resnet", "weights": str(resnet)}),
            Variant(frozenset({"image_size"}), {"image_size": 48}),
            Variant(frozenset({"normalize"}), {"normalize": True}),
        ],
        offline_only={"pretrained": "pretrained = true downloads timm's hub weights (no network here); the "
                                    "weights and model variants cover the weights' part of the fingerprint"},
        swap_weights=lambda swap: shutil.copyfile(other if swap else original, live),
    )


def _transformers(root: Path) -> Harness:
    from tests.unit.features.test_text_transformers import make_tiny_bert

    live, other = make_tiny_bert(root / "bert-live", 0), make_tiny_bert(root / "bert-seed1", 1)
    original = make_tiny_bert(root / "bert-seed0", 0)
    refs, bad = text_samples()

    def swap(to_other: bool) -> None:
        for name in ("model.safetensors", "config.json"):
            shutil.copyfile((other if to_other else original) / name, live / name)

    return Harness(
        "transformers", {"model": str(live)}, refs, bad, (0, 4),
        variants=[
            Variant(frozenset({"model"}), {"model": str(other)}),
            Variant(frozenset({"max_length"}), {"max_length": 4}),
            Variant(frozenset({"normalize"}), {"normalize": False}),
            Variant(frozenset({"pooling"}), {"pooling": "cls"}),
        ],
        swap_weights=swap,
    )


def _pixels(root: Path) -> Harness:
    refs, bad = image_samples(root / "images")
    return Harness("pixels", {}, refs, bad, (0, 5), variants=[
        Variant(frozenset({"size"}), {"size": 6}),
        Variant(frozenset({"resample"}), {"resample": "nearest"}),
    ])


def _hashing(root: Path) -> Harness:
    refs, bad = text_samples()
    return Harness("hashing", {}, refs, bad, (0, 4), variants=[
        Variant(frozenset({"n_features"}), {"n_features": 64}),
        Variant(frozenset({"ngram_range"}), {"ngram_range": [1, 1]}),
        Variant(frozenset({"alternate_sign"}), {"alternate_sign": True}),
        Variant(frozenset({"lowercase"}), {"lowercase": False}),
        Variant(frozenset({"analyzer"}), {"analyzer": "char"}),
    ])


def _vector(root: Path) -> Harness:
    refs, bad = vector_samples(root / "vectors")
    return Harness("vector", {}, refs, bad, (1, 4))


HARNESSES: dict[str, Callable[[Path], Harness]] = {
    "pixels": _pixels,
    "vector": _vector,
    "hashing": _hashing,
    "open_clip": _open_clip,
    "timm": _timm,
    "transformers": _transformers,
}


@pytest.fixture(scope="module", params=NAMES)
def h(request, tmp_path_factory) -> Harness:
    if request.param not in HARNESSES:
        pytest.fail(f"The encoder {request.param!r} has no harness in tests/contract/test_encoders_contract.py: add "
                    "one to HARNESSES (its parameters, real samples, an unreadable sample, output-changing variants).")
    return HARNESSES[request.param](tmp_path_factory.mktemp(f"encoder-{request.param}"))


def test_every_builtin_encoder_is_registered():
    assert_builtins_registered("encoder", NAMES, BUILTINS)


def test_every_registered_encoder_has_a_harness():
    assert_every_plugin_has_a_harness("encoder", NAMES, HARNESSES)


def test_is_an_encoder_with_a_folder_safe_fingerprint(h):
    enc = h.make()
    assert isinstance(enc, Encoder)
    fp = enc.fingerprint()
    assert isinstance(fp, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", fp), fp  # it names a cache folder
    assert enc.fingerprint() == fp and h.make().fingerprint() == fp


def test_encode_gives_finite_float32_rows_of_one_dim_for_any_batch(h):
    enc = h.make()
    X = enc.encode(h.samples)
    assert isinstance(X, np.ndarray) and X.dtype == np.float32
    assert X.ndim == 2 and X.shape[0] == len(h.samples) and X.shape[1] > 0
    assert np.isfinite(X).all()
    for batch in (h.samples[:1], h.samples[1:4], h.samples[::-1]):
        Y = enc.encode(batch)
        assert Y.dtype == np.float32 and Y.shape == (len(batch), X.shape[1])


def test_the_same_content_gives_the_same_row(h):
    enc = h.make()
    X = enc.encode(h.samples)
    np.testing.assert_array_equal(enc.encode(h.samples), X)  # deterministic
    np.testing.assert_array_equal(h.make().encode(h.samples), X)  # a new instance too
    i, j = h.same_content
    np.testing.assert_allclose(X[i], X[j], rtol=0, atol=1e-6)
    assert not np.allclose(X[0], X[2]) and not np.allclose(X[1], X[2])  # other contents, other rows
    # independent of the batch: alone, reversed, in other company
    alone = np.vstack([enc.encode([s]) for s in h.samples])
    np.testing.assert_allclose(alone, X, rtol=0, atol=1e-5)
    np.testing.assert_allclose(enc.encode(h.samples[::-1])[::-1], X, rtol=0, atol=1e-5)
    np.testing.assert_allclose(enc.encode([h.samples[2], h.samples[0]]), X[[2, 0]], rtol=0, atol=1e-5)


def test_fingerprint_changes_with_every_output_changing_parameter(h):
    base_fp, base_X = h.make().fingerprint(), h.make().encode(h.samples)
    seen = {base_fp: "base"}
    for v in h.variants:
        enc = h.make(**v.params)
        fp = enc.fingerprint()
        assert fp not in seen, f"{sorted(v.covers)} changed but the fingerprint equals that of {seen.get(fp)}"
        seen[fp] = str(sorted(v.covers))
        X = enc.encode(h.samples)  # the variant really changes the output: the key must change
        assert X.shape != base_X.shape or not np.allclose(X, base_X, atol=1e-6), sorted(v.covers)


def test_every_parameter_is_in_the_fingerprint_or_neutral(h):
    fields = set(getattr(type(h.make()), "model_fields", {}))
    covered = set().union(*(v.covers for v in h.variants)) | h.neutral | set(h.offline_only)
    assert not fields - covered, (f"parameters of {h.name!r} neither varied by the harness (does the fingerprint "
                                  f"follow them?) nor declared neutral: {sorted(fields - covered)}")


def test_fingerprint_follows_the_weights_bytes(h):
    weight_based = h.name in ("open_clip", "timm", "transformers")
    assert (h.swap_weights is not None) == weight_based
    if h.swap_weights is None:
        return
    before = h.make()
    fp, X = before.fingerprint(), before.encode(h.samples)
    try:
        h.swap_weights(True)  # same path, other weights
        after = h.make()
        assert after.fingerprint() != fp
        assert not np.allclose(after.encode(h.samples), X, atol=1e-6)
    finally:
        h.swap_weights(False)
    assert h.make().fingerprint() == fp


def test_an_unreadable_sample_raises_sample_decode_error_naming_it(h):
    enc = h.make()
    with pytest.raises(SampleDecodeError) as err:
        enc.encode([h.samples[0], h.unreadable, h.samples[1]])
    assert err.value.key == h.unreadable.key
    assert repr(h.unreadable.key) in str(err.value)
