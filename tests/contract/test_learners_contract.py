"""Contract every registered learner must honour (a new learner needs a harness here).

A learner is either a :class:`~alloop.protocols.FeatureLearner` (trained in the process on
feature rows) or an :class:`~alloop.protocols.ExternalLearner` (a program trained on exported
samples). ``HARNESSES`` lists, per registered name, the configurations the suite builds
(``registry.create`` with their params) and whether their training is random. Feature learners
are trained on scikit-learn's digits (real 8x8 images as 64 features) with two classes left out
of the labels; the teacher a distilling learner asks for is a real logistic regression trained
on other digits. External learners run a real Python script on real texts.
"""

from __future__ import annotations

import io
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alloop import registry
from alloop.errors import NotFittedError
from alloop.protocols import (
    LEARNER_INPUTS,
    ExportItem,
    ExternalLearner,
    ExternalResult,
    FeatureLearner,
    Learner,
)
from tests.contract._coverage import assert_builtins_registered, assert_every_plugin_has_a_harness

NAMES = registry.available("learner")
BUILTINS = {"sklearn", "kd_student", "command", "ensemble"}
N_CLASSES = 10
ABSENT = (4, 9)  # classes of the label set with no training label


@dataclass(frozen=True)
class Config:
    """One way to build a learner: its registry name, its params, whether seeds change it."""

    name: str
    #: the params, or a function of a scratch folder giving them (a script written there)
    params: dict[str, Any] | Callable[[Path | None], dict[str, Any]] = field(default_factory=dict)
    stochastic: bool = False
    id: str = ""

    def create(self, tmp_path: Path | None = None) -> Any:
        return registry.create("learner", self.name, self.params(tmp_path) if callable(self.params) else self.params)


# ---------------------------------------------------------------------------------------------
# data: digits features, a real teacher
# ---------------------------------------------------------------------------------------------
def _digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    pool, rest = order[:600], order[600:]
    seen = pool[~np.isin(y[pool], ABSENT)]
    train = seen[:150]
    test = rest[:300]
    teacher_rows = rest[300:700]
    teacher = LogisticRegression(max_iter=2000).fit(X[teacher_rows], y[teacher_rows])
    other = LogisticRegression(max_iter=2000, C=0.01).fit(X[teacher_rows], (y[teacher_rows] + 1) % N_CLASSES)
    return {
        "X": X[train], "y": y[train], "X_pool": X[pool], "X_test": X[test], "y_test": y[test],
        "teacher_proba": teacher.predict_proba(X[train]), "teacher_pool": teacher.predict_proba(X[pool]),
        "other_teacher_proba": other.predict_proba(X[train]), "other_teacher_pool": other.predict_proba(X[pool]),
        "other_pool": X[rest[700:1300]],
    }


DATA = _digits()


def fit(learner: Any, seed: int = 0, *, X: np.ndarray | None = None, y: np.ndarray | None = None,
        pool: np.ndarray | None = None, teacher: tuple[np.ndarray, np.ndarray] | None = None) -> Any:
    """``learner.fit`` with exactly the inputs its ``requires`` declares (what the loop computes)."""
    kwargs: dict[str, Any] = {}
    if "pool" in learner.requires:
        kwargs["X_pool"] = DATA["X_pool"] if pool is None else pool
    if "teacher" in learner.requires:
        tp, tpool = teacher or (DATA["teacher_proba"], DATA["teacher_pool"])
        kwargs.update(teacher_proba=tp, teacher_pool=tpool)
    return learner.fit(DATA["X"] if X is None else X, DATA["y"] if y is None else y,
                       n_classes=N_CLASSES, seed=seed, **kwargs)


# ---------------------------------------------------------------------------------------------
# external learners: a real script on real texts
# ---------------------------------------------------------------------------------------------
#: a user's training script: nearest class centroid over word counts, seeded jitter on the scores
CENTROID_SCRIPT = """
    import json, os, sys
    import numpy as np

    def rows(path):
        return [json.loads(line) for line in open(path) if line.strip()]

    train, predict = rows(os.environ["ALLOOP_TRAIN"]), rows(os.environ["ALLOOP_PREDICT"])
    labels = sorted({r["label"] for r in train})          # the script's own order, not alloop's
    vocab = sorted({w for r in train + predict for w in r["text"].split()})
    def counts(text):
        v = np.zeros(len(vocab))
        for w in text.split():
            v[vocab.index(w)] += 1
        return v / max(v.sum(), 1)
    centroids = np.array([np.mean([counts(r["text"]) for r in train if r["label"] == lb], axis=0) for lb in labels])
    rng = np.random.default_rng(int(sys.argv[1]))
    with open(os.environ["ALLOOP_OUTPUT"], "w") as out:
        for r in predict:
            scores = 8 * counts(r["text"]) @ centroids.T + rng.normal(scale=0.05, size=len(labels))
            p = np.exp(scores - scores.max()); p /= p.sum()
            out.write(json.dumps({"key": r["key"], "proba": dict(zip(labels, p.tolist()))}) + "\\n")
"""

TEXT_LABELS = ["pos", "neg", "neu"]  # not sorted: columns must follow this order
WORDS = {"pos": "great lovely superb", "neg": "awful dull boring", "neu": "table chair window"}


def text_items(n: int, prefix: str, with_label: bool) -> tuple[list[ExportItem], list[str]]:
    items, truth = [], []
    for i in range(n):
        lb = TEXT_LABELS[i % 3]
        words = WORDS[lb].split()
        text = f"{words[i % 3]} {words[(i + 1) % 3]} the"
        items.append(ExportItem(f"{prefix}{i}", {"text": text}, label=lb if with_label else None))
        truth.append(lb)
    return items, truth


def script_command(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "train_centroids.py"
    path.write_text(textwrap.dedent(CENTROID_SCRIPT))
    return {"command": [sys.executable, str(path), "{seed}"], "timeout_s": 120}


def run(learner: Any, tmp_path: Path, seed: int, name: str = "run") -> tuple[Any, list[ExportItem], list[str]]:
    train, _ = text_items(12, "t", True)
    predict, truth = text_items(9, "p", False)
    predict = predict[::-1]  # keys in an order of their own
    truth = truth[::-1]
    result = learner.run(task="text", labels=TEXT_LABELS, train=train, predict=predict,
                         run_dir=tmp_path / name, seed=seed)
    return result, predict, truth


# ---------------------------------------------------------------------------------------------
# harnesses: the configurations of every registered learner
# ---------------------------------------------------------------------------------------------
FAST_KD = {"epochs": 2, "min_steps": 60, "batch_size": 128}
HARNESSES: dict[str, list[Config]] = {
    "sklearn": [
        Config("sklearn", {}, stochastic=False, id="logistic"),
        Config("sklearn", {"estimator": "sklearn.ensemble.RandomForestClassifier",
                           "params": {"n_estimators": 15}}, stochastic=True, id="forest"),
    ],
    "kd_student": [
        Config("kd_student", FAST_KD, stochastic=True, id="distilling"),
        Config("kd_student", {**FAST_KD, "kd_weight": 0.0, "alpha": 0.0}, stochastic=True, id="plain"),
    ],
    "command": [Config("command", script_command, stochastic=True, id="script")],
    "ensemble": [Config("ensemble", {"members": 3}, stochastic=True, id="bagged-logistic")],
}
CONFIGS = [pytest.param(c, id=f"{n}-{c.id}") for n in NAMES for c in HARNESSES.get(n, [Config(n, id="no-harness")])]


@pytest.fixture(params=CONFIGS)
def config(request) -> Config:
    cfg: Config = request.param
    if cfg.name not in HARNESSES:
        pytest.fail(f"The learner {cfg.name!r} has no harness in tests/contract/test_learners_contract.py: add its "
                    "configurations to HARNESSES.")
    return cfg


def feature_configs() -> list[Any]:
    return [p for p in CONFIGS if p.values[0].name in HARNESSES and _is_feature(p.values[0])]


def external_configs() -> list[Any]:
    return [p for p in CONFIGS if p.values[0].name in HARNESSES and not _is_feature(p.values[0])]


def _is_feature(cfg: Config) -> bool:
    cls = registry.load("learner", cfg.name)
    return hasattr(cls, "fit") and hasattr(cls, "predict_proba")


def test_every_builtin_learner_is_registered():
    assert_builtins_registered("learner", NAMES, BUILTINS)


def test_every_registered_learner_has_a_harness():
    assert_every_plugin_has_a_harness("learner", NAMES, HARNESSES)


def test_is_a_learner_of_exactly_one_kind(config, tmp_path):
    learner = config.create(tmp_path)
    assert isinstance(learner, Learner) and learner.name == config.name
    assert isinstance(learner.requires, frozenset) and learner.requires <= LEARNER_INPUTS
    assert isinstance(learner, FeatureLearner) != isinstance(learner, ExternalLearner)
    # a feature learner trains on rows, an external one on exported files
    assert ("files" in learner.requires) == isinstance(learner, ExternalLearner)


# --- feature learners ------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", feature_configs())
def test_fit_returns_itself_and_proba_has_a_column_per_class(cfg):
    learner = cfg.create()
    assert fit(learner) is learner
    p = learner.predict_proba(DATA["X_test"])
    assert p.shape == (len(DATA["X_test"]), N_CLASSES) and np.issubdtype(p.dtype, np.floating)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1 + 1e-6).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    if "teacher" not in learner.requires:  # nothing taught it the absent classes
        assert (p[:, list(ABSENT)] == 0).all(), "a class without training labels must get probability 0"
    # column j is class j: the learner is right on most test digits of the classes it saw
    seen = ~np.isin(DATA["y_test"], ABSENT)
    assert (p[seen].argmax(axis=1) == DATA["y_test"][seen]).mean() > 0.6
    emb = learner.embed(DATA["X_test"])
    assert emb is None or (emb.ndim == 2 and emb.shape[0] == len(DATA["X_test"]) and np.isfinite(emb).all())
    # penultimate features (BADGE): only from a learner that says it gives them, one row per sample
    gives = getattr(learner, "gives_penultimate", False)
    assert gives in (True, False)
    if gives:
        h = learner.penultimate(DATA["X_test"])
        assert h.ndim == 2 and h.shape[0] == len(DATA["X_test"]) and np.isfinite(h).all()


@pytest.mark.parametrize("cfg", feature_configs())
def test_same_seed_same_probabilities_and_seeds_matter_when_random(cfg):
    a = fit(cfg.create(), seed=3).predict_proba(DATA["X_test"])
    b = fit(cfg.create(), seed=3).predict_proba(DATA["X_test"])
    np.testing.assert_array_equal(a, b)
    c = fit(cfg.create(), seed=4).predict_proba(DATA["X_test"])
    if cfg.stochastic:
        assert not np.array_equal(a, c), "a random learner gave identical probabilities for two seeds"
    else:
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("cfg", feature_configs())
def test_every_learner_is_fresh(cfg):
    a, b = cfg.create(), cfg.create()
    with pytest.raises(NotFittedError):
        a.predict_proba(DATA["X_test"])
    pa = fit(a, seed=0).predict_proba(DATA["X_test"])
    with pytest.raises(NotFittedError):
        b.predict_proba(DATA["X_test"])  # fitting one learner does not fit another
    half = slice(0, 80)
    fit(b, seed=1, X=DATA["X"][half], y=DATA["y"][half])
    np.testing.assert_array_equal(a.predict_proba(DATA["X_test"]), pa)  # nor change it
    with pytest.raises(NotFittedError):
        cfg.create().predict_proba(DATA["X_test"])  # a learner created after fits is unfitted
    # a refit starts from scratch: the same as a new learner fitted on that data
    fit(a, seed=1, X=DATA["X"][half], y=DATA["y"][half])
    np.testing.assert_array_equal(a.predict_proba(DATA["X_test"]), b.predict_proba(DATA["X_test"]))


@pytest.mark.parametrize("cfg", feature_configs())
def test_save_then_load_gives_identical_probabilities(cfg, tmp_path):
    learner = fit(cfg.create(), seed=2)
    path = tmp_path / "model.bin"
    with open(path, "wb") as fh:
        learner.save(fh)
    loaded = type(learner).load(path, cfg.params)
    assert type(loaded) is type(learner)
    np.testing.assert_array_equal(loaded.predict_proba(DATA["X_test"]), learner.predict_proba(DATA["X_test"]))
    buf = io.BytesIO()
    learner.save(buf)
    assert buf.getvalue() and path.read_bytes()


@pytest.mark.parametrize("cfg", feature_configs())
def test_declared_inputs_are_used(cfg):
    learner = cfg.create()
    base = fit(learner, seed=0).predict_proba(DATA["X_test"])
    if "pool" in learner.requires:
        other = fit(cfg.create(), seed=0, pool=DATA["other_pool"]).predict_proba(DATA["X_test"])
        assert not np.allclose(base, other), "the pool's features are declared but do not change the model"
    if "teacher" in learner.requires:
        taught = fit(cfg.create(), seed=0, teacher=(DATA["other_teacher_proba"], DATA["other_teacher_pool"]))
        assert not np.allclose(base, taught.predict_proba(DATA["X_test"])), \
            "a teacher is declared but its probabilities do not change the model"
    assert learner.requires <= {"pool", "teacher"}


# --- external learners -----------------------------------------------------------------------
@pytest.mark.parametrize("cfg", external_configs())
def test_run_returns_the_protocol_result(cfg, tmp_path):
    result, _, _ = run(cfg.create(tmp_path), tmp_path, seed=0)
    assert isinstance(result, ExternalResult), f"{type(result)} is not alloop.protocols.ExternalResult"


@pytest.mark.parametrize("cfg", external_configs())
def test_run_predicts_the_given_keys_in_order_with_one_column_per_label(cfg, tmp_path):
    result, predict, truth = run(cfg.create(tmp_path), tmp_path, seed=0)
    assert result.task == "text"
    assert tuple(result.keys) == tuple(item.key for item in predict)
    p = np.asarray(result.proba)
    assert p.shape == (len(predict), len(TEXT_LABELS)) and np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    # columns follow the given label order (the script writes its own order)
    assert [TEXT_LABELS[j] for j in p.argmax(axis=1)] == truth


@pytest.mark.parametrize("cfg", external_configs())
def test_run_is_reproducible_by_seed(cfg, tmp_path):
    learner = cfg.create(tmp_path)
    a, _, _ = run(learner, tmp_path, seed=5, name="a")
    b, _, _ = run(learner, tmp_path, seed=5, name="b")
    np.testing.assert_array_equal(a.proba, b.proba)
    c, _, _ = run(learner, tmp_path, seed=6, name="c")
    assert not np.array_equal(a.proba, c.proba)
