from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from alloop import registry
from alloop.errors import ConfigError, LearnerError, NotFittedError
from alloop.learners.kd_student import kd_loss


def test_kd_loss_matches_its_formula():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 4))
    p = rng.dirichlet(np.ones(4), size=5)
    T = 2.0
    # by hand: T^2 * mean_i KL(softmax(log p_i / T) || softmax(s_i / T))
    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    pt, ps = softmax(np.log(p) / T), softmax(s / T)
    expected = T**2 * np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1))
    got = kd_loss(torch.tensor(s), torch.tensor(p), T).item()
    assert got == pytest.approx(expected, rel=1e-10)
    # identical distributions: zero loss
    assert kd_loss(torch.log(torch.tensor(p)), torch.tensor(p), 1.0).item() == pytest.approx(0, abs=1e-12)


def blobs(n=400, c=3, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4, size=(c, d))
    y = rng.integers(c, size=n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_student_learns_from_few_labels_and_the_teacher():
    X, y = blobs()
    teacher = np.full((len(y), 3), 0.1)
    teacher[np.arange(len(y)), y] = 0.8  # a good teacher
    lab = np.array([0, 1, 2, 3, 4, 5])
    learner = registry.create("learner", "kd_student", {"epochs": 20})
    learner.fit(X[lab], y[lab], n_classes=3, seed=0, X_pool=X, teacher_proba=teacher[lab], teacher_pool=teacher)
    p = learner.predict_proba(X)
    assert p.shape == (400, 3) and np.allclose(p.sum(axis=1), 1)
    assert (p.argmax(axis=1) == y).mean() > 0.95


def test_prediction_mix_alpha_beta():
    X, y = blobs(n=100)
    t = np.full((100, 3), 1 / 3)
    only_ce = registry.create("learner", "kd_student", {"alpha": 0.0, "epochs": 2}).fit(
        X[:30], y[:30], n_classes=3, seed=1, X_pool=X, teacher_proba=t[:30], teacher_pool=t)
    only_kd = registry.create("learner", "kd_student", {"alpha": 1.0, "epochs": 2}).fit(
        X[:30], y[:30], n_classes=3, seed=1, X_pool=X, teacher_proba=t[:30], teacher_pool=t)
    mixed = registry.create("learner", "kd_student", {"alpha": 0.5, "epochs": 2}).fit(
        X[:30], y[:30], n_classes=3, seed=1, X_pool=X, teacher_proba=t[:30], teacher_pool=t)
    # same seed, same training: the mix is the average of the two heads' softmaxes
    np.testing.assert_allclose(mixed.predict_proba(X), 0.5 * only_ce.predict_proba(X) + 0.5 * only_kd.predict_proba(X),
                               atol=1e-6)
    # a uniform teacher keeps the KD head near uniform
    assert np.abs(only_kd.predict_proba(X) - 1 / 3).max() < 0.15


def test_seeded_reinitialized_and_save_load(tmp_path):
    X, y = blobs(n=120)
    t = np.full((120, 3), 1 / 3)

    def fit(seed):
        return registry.create("learner", "kd_student", {"epochs": 3}).fit(
            X[:20], y[:20], n_classes=3, seed=seed, X_pool=X, teacher_proba=t[:20], teacher_pool=t)

    a, b, c = fit(5), fit(5), fit(6)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))
    buf = io.BytesIO()
    a.save(buf)
    (tmp_path / "m.pt").write_bytes(buf.getvalue())
    back = registry.load("learner", "kd_student").load(tmp_path / "m.pt", {"epochs": 3})
    np.testing.assert_array_equal(back.predict_proba(X), a.predict_proba(X))


def test_without_kd_needs_no_teacher_and_errors():
    X, y = blobs(n=60)
    plain = registry.create("learner", "kd_student", {"kd_weight": 0, "alpha": 0, "epochs": 5})
    assert "teacher" not in plain.requires and "pool" in plain.requires
    plain.fit(X[:12], y[:12], n_classes=3, seed=0, X_pool=X)
    assert (plain.predict_proba(X).argmax(1) == y).mean() > 0.8
    with pytest.raises(LearnerError, match=r"\[teacher\]"):
        registry.create("learner", "kd_student").fit(X[:12], y[:12], n_classes=3, seed=0, X_pool=X)
    with pytest.raises(NotFittedError):
        registry.create("learner", "kd_student").predict_proba(X)
    with pytest.raises(ConfigError, match="temperatur"):
        registry.create("learner", "kd_student", {"temperatur": 2})


def test_mc_dropout_members_are_seeded_thinned_students_independent_of_the_shard(tmp_path):
    X, y = blobs(n=150)
    plain = registry.create("learner", "kd_student", {"kd_weight": 0, "alpha": 0, "epochs": 3})
    assert plain.gives_members is False
    plain.fit(X[:30], y[:30], n_classes=3, seed=0, X_pool=X)
    with pytest.raises(LearnerError, match="dropout > 0"):
        plain.member_proba(X)

    params = {"kd_weight": 0, "alpha": 0, "epochs": 3, "dropout": 0.4, "mc_samples": 6}
    mc = registry.create("learner", "kd_student", params)
    assert mc.gives_members is True
    with pytest.raises(NotFittedError):
        mc.member_proba(X)
    mc.fit(X[:30], y[:30], n_classes=3, seed=7, X_pool=X)
    m = mc.member_proba(X)
    assert m.shape == (150, 6, 3) and np.allclose(m.sum(axis=2), 1)
    # member s, by hand: the s-th seeded mask over the standardised features, the same for every row
    st = mc.state_
    masks = (torch.rand((6, X.shape[1]), generator=torch.Generator().manual_seed(7 + 1)) >= 0.4).float() / 0.6
    x = torch.as_tensor((X - st["mean"]) / st["std"], dtype=torch.float32)
    for s in range(6):
        logits = torch.nn.functional.linear(x * masks[s], st["ce"]["weight"], st["ce"]["bias"])
        np.testing.assert_allclose(m[:, s], torch.softmax(logits, dim=1).numpy(), atol=1e-6)
    # the members differ, scoring in two shards gives the same members, and so does a reload
    assert np.abs(m[:, 0] - m[:, 1]).max() > 1e-3
    np.testing.assert_array_equal(np.concatenate([mc.member_proba(X[:40]), mc.member_proba(X[40:])]), m)
    buf = io.BytesIO()
    mc.save(buf)
    (tmp_path / "m.pt").write_bytes(buf.getvalue())
    back = registry.load("learner", "kd_student").load(tmp_path / "m.pt", params)
    np.testing.assert_array_equal(back.member_proba(X), m)
    # dropout in training changes the model; the members' mean votes mostly as the model does
    assert not np.array_equal(mc.predict_proba(X), plain.predict_proba(X))
    assert (m.mean(axis=1).argmax(1) == mc.predict_proba(X).argmax(1)).mean() > 0.9
