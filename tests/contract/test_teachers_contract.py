"""Contract every registered teacher must honour (a new teacher needs a harness here).

A harness (``HARNESSES``) builds a teacher offline on real inputs: the CLIP zero-shot teacher on
a tiny open_clip model saved here and real PNG images, the predictions teacher on a real
predictions file (``.npz`` with named columns, or ``.jsonl``). It lists the changes that change
the probabilities - with which the fingerprint must change - and a sample the teacher cannot
answer for (a corrupt image; a key the file does not hold), with the error it must raise.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alloop import registry
from alloop.errors import ConfigError, SampleDecodeError
from alloop.features.cache import FeatureCache
from alloop.protocols import SampleRef, Teacher, TeacherContext
from tests.contract._coverage import assert_builtins_registered, assert_every_plugin_has_a_harness
from tests.contract._tiny_models import TINY_CLIP_B_NAME, make_tiny_clip_b

NAMES = registry.available("teacher")
BUILTINS = {"clip_zeroshot", "predictions"}
LABELS = ("zero", "one", "red_disc", "blue_square")
PERMUTED = (2, 0, 3, 1)  # LABELS in another order: (red_disc, zero, blue_square, one)


@dataclass(frozen=True)
class Variant:
    covers: frozenset[str]
    params: dict[str, Any]


@dataclass
class Harness:
    name: str
    root: Path
    params: dict[str, Any]
    samples: list[SampleRef]
    #: a sample the teacher cannot answer for, and the error that must name it
    bad: SampleRef
    bad_error: type[Exception]
    variants: list[Variant] = field(default_factory=list)
    neutral: frozenset[str] = frozenset({"batch_size", "device"})
    #: ``swap_source(True)`` rewrites in place what the probabilities are read from (weights, the
    #: predictions file) with other content; ``swap_source(False)`` puts the original back
    swap_source: Callable[[bool], None] | None = None
    _n: int = 0

    def make(self, labels: tuple[str, ...] = LABELS, **override: Any) -> Any:
        self._n += 1
        work = self.root / f"work-{self._n}"  # a fresh cache each time: nothing is answered from disk
        context = TeacherContext(project="contract", labels=labels, work_dir=work,
                                 cache=FeatureCache(work / "features"), seed=0)
        return registry.create("teacher", self.name, {**self.params, **override}, context=context)


# ---------------------------------------------------------------------------------------------
# harnesses
# ---------------------------------------------------------------------------------------------
def _images(folder: Path) -> tuple[list[SampleRef], SampleRef]:
    from tests.helpers.tiny_clip import write_test_images

    refs = write_test_images(folder, n_digits=2)  # digit0, digit1, a red disc, a blue square
    good = (folder / refs[0].data["path"]).read_bytes()
    (folder / "corrupt.png").write_bytes(good[: len(good) // 2])
    return refs, SampleRef("corrupt.png", "image", "corrupt", {"path": "corrupt.png"}, folder)


def _clip(root: Path) -> Harness:
    from tests.helpers.tiny_clip import TINY_CLIP_NAME, make_tiny_clip

    config, ckpt0 = make_tiny_clip(root / "clip", seed=0)
    _, ckpt1 = make_tiny_clip(root / "clip", seed=1)
    config_b, ckpt_b = make_tiny_clip_b(root / "clip")
    live = root / "clip" / "live.pt"
    shutil.copyfile(ckpt0, live)
    refs, bad = _images(root / "images")
    return Harness(
        "clip_zeroshot", root, {"model": TINY_CLIP_NAME, "pretrained": str(live), "model_config": str(config)},
        refs, bad, SampleDecodeError,
        variants=[
            Variant(frozenset({"pretrained"}), {"pretrained": str(ckpt1)}),
            Variant(frozenset({"model", "config_file"}),
                    {"model": TINY_CLIP_B_NAME, "pretrained": str(ckpt_b), "model_config": str(config_b)}),
            Variant(frozenset({"templates"}), {"templates": ["a photo of a {}."]}),
            Variant(frozenset({"class_names"}), {"class_names": {"red_disc": "crimson circle"}}),
            Variant(frozenset({"logit_scale"}), {"logit_scale": 30.0}),
        ],
        swap_source=lambda other: shutil.copyfile(ckpt1 if other else ckpt0, live),
    )


def _proba_table(keys: list[str], seed: int) -> np.ndarray:
    """Probabilities over LABELS (columns in LABELS order) for ``keys``."""
    return np.random.default_rng(seed).dirichlet(np.full(len(LABELS), 0.6), len(keys))


def _write_predictions(path: Path, keys: list[str], seed: int) -> None:
    proba = _proba_table(keys, seed)
    if path.suffix == ".npz":  # columns stored in another order than the project's, and named
        np.savez(path, keys=np.array(keys), proba=proba[:, PERMUTED], labels=np.array([LABELS[j] for j in PERMUTED]))
    else:
        path.write_text("".join(json.dumps({"key": k, "proba": dict(zip(LABELS, row.tolist()))}) + "\n"
                                for k, row in zip(keys, proba)))


def _predictions(root: Path, suffix: str) -> Harness:
    refs, _ = _images(root / "images")
    keys = [r.key for r in refs]
    live, other = root / f"teacher{suffix}", root / f"other{suffix}"
    _write_predictions(live, keys, 0)
    _write_predictions(other, keys, 1)
    original = live.read_bytes()

    def swap(to_other: bool) -> None:
        if to_other:
            _write_predictions(live, keys, 2)
        else:
            live.write_bytes(original)

    unknown = SampleRef("not-in-the-file.png", "image", "x", {"path": "digit0.png"}, refs[0].work_dir)
    return Harness("predictions", root, {"path": str(live)}, refs, unknown, ConfigError,
                   variants=[Variant(frozenset({"path"}), {"path": str(other)})], swap_source=swap)


#: per registered teacher, its configurations: (id, builder)
HARNESSES: dict[str, list[tuple[str, Callable[[Path], Harness]]]] = {
    "clip_zeroshot": [("tiny-clip", _clip)],
    "predictions": [("npz", lambda root: _predictions(root, ".npz")),
                    ("jsonl", lambda root: _predictions(root, ".jsonl"))],
}
CASES = [(n, cid, build) for n in NAMES for cid, build in HARNESSES.get(n, [("no-harness", None)])]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{cid}" for n, cid, _ in CASES])
def h(request, tmp_path_factory) -> Harness:
    name, _, build = request.param
    if build is None:
        pytest.fail(f"The teacher {name!r} has no harness in tests/contract/test_teachers_contract.py: add one to "
                    "HARNESSES (its parameters, real samples, a sample it cannot answer, the changes of its inputs).")
    return build(tmp_path_factory.mktemp(f"teacher-{name}"))


def test_every_builtin_teacher_is_registered():
    assert_builtins_registered("teacher", NAMES, BUILTINS)


def test_every_registered_teacher_has_a_harness():
    assert_every_plugin_has_a_harness("teacher", NAMES, HARNESSES)


def test_is_a_teacher_with_a_folder_safe_stable_fingerprint(h):
    t = h.make()
    assert isinstance(t, Teacher)
    fp = t.fingerprint()
    assert isinstance(fp, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", fp), fp  # part of a cache folder
    assert t.fingerprint() == fp and h.make().fingerprint() == fp


def test_probabilities_have_one_column_per_label_and_rows_summing_to_one(h):
    p = h.make().predict_proba(h.samples)
    assert isinstance(p, np.ndarray) and np.issubdtype(p.dtype, np.floating)
    assert p.shape == (len(h.samples), len(LABELS))
    assert np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert p.max() - p.min() > 0.01  # not a uniform answer: the comparisons below have teeth
    assert h.make().predict_proba([]).shape == (0, len(LABELS))


def test_columns_follow_the_context_labels(h):
    p = h.make().predict_proba(h.samples)
    order = tuple(LABELS[j] for j in PERMUTED)
    q = h.make(labels=order).predict_proba(h.samples)
    np.testing.assert_allclose(q, p[:, PERMUTED], rtol=0, atol=1e-5)


def test_deterministic(h):
    t = h.make()
    p = t.predict_proba(h.samples)
    np.testing.assert_array_equal(t.predict_proba(h.samples), p)
    np.testing.assert_array_equal(h.make().predict_proba(h.samples), p)
    np.testing.assert_allclose(h.make().predict_proba(h.samples[::-1])[::-1], p, rtol=0, atol=1e-6)


def test_fingerprint_changes_with_what_the_probabilities_depend_on(h):
    base = h.make()
    seen = {base.fingerprint(): "base"}
    p = base.predict_proba(h.samples)
    for v in h.variants:
        t = h.make(**v.params)
        fp = t.fingerprint()
        assert fp not in seen, f"{sorted(v.covers)} changed but the fingerprint equals that of {seen.get(fp)}"
        seen[fp] = str(sorted(v.covers))
        assert not np.allclose(t.predict_proba(h.samples), p, atol=1e-6), sorted(v.covers)


def test_every_parameter_is_in_the_fingerprint_or_neutral(h):
    params = getattr(h.make(), "params", None)
    fields = set(getattr(type(params), "model_fields", {})) or set(h.params)
    covered = set().union(*(v.covers for v in h.variants)) | h.neutral
    assert not fields - covered, f"parameters of {h.name!r} neither varied nor neutral: {sorted(fields - covered)}"


def test_fingerprint_follows_the_content_it_reads(h):
    assert h.swap_source is not None, "every teacher reads weights or a file: give the harness a swap_source"
    before = h.make()
    fp, p = before.fingerprint(), before.predict_proba(h.samples)
    try:
        h.swap_source(True)  # same path, other content
        after = h.make()
        assert after.fingerprint() != fp
        assert not np.allclose(after.predict_proba(h.samples), p, atol=1e-6)
    finally:
        h.swap_source(False)
    assert h.make().fingerprint() == fp


def test_a_sample_it_cannot_answer_raises_a_clear_error_naming_it(h):
    with pytest.raises(h.bad_error) as err:
        h.make().predict_proba([h.samples[0], h.bad, h.samples[1]])
    assert repr(h.bad.key) in str(err.value)
