from __future__ import annotations

import json

import numpy as np
import pytest

from alloop import registry
from alloop.errors import ConfigError
from alloop.features.cache import FeatureCache
from alloop.protocols import SampleRef, TeacherContext
from alloop.teachers.base import teacher_proba


def ctx(tmp_path):
    return TeacherContext(labels=("cat", "dog", "eel"), work_dir=tmp_path / ".alloop",
                          cache=FeatureCache(tmp_path / "c"))


def refs(keys, tmp_path):
    return [SampleRef(k, "image", f"h-{k}", {}, tmp_path) for k in keys]


def test_npz_columns_matched_by_name_and_renormalized(tmp_path):
    np.savez(tmp_path / "t.npz", keys=np.array(["a", "b"]), labels=np.array(["eel", "cat", "dog"]),
             proba=np.array([[2.0, 1.0, 1.0], [0.0, 0.0, 5.0]]))
    t = registry.load("teacher", "predictions").from_params({"path": str(tmp_path / "t.npz")}, context=ctx(tmp_path))
    p = t.predict_proba(refs(["b", "a"], tmp_path))
    np.testing.assert_allclose(p, [[0, 1, 0], [0.25, 0.25, 0.5]])


def test_jsonl_and_missing_sample(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"key": "a", "proba": {"dog": 0.9, "cat": 0.1}}) + "\n")
    t = registry.load("teacher", "predictions").from_params({"path": "t.jsonl"}, context=ctx(tmp_path))
    np.testing.assert_allclose(t.predict_proba(refs(["a"], tmp_path)), [[0.1, 0.9, 0.0]])
    with pytest.raises(ConfigError, match="no prediction for 1 samples .*'zz'"):
        t.predict_proba(refs(["a", "zz"], tmp_path))


def test_cached_and_invalidated_when_the_file_changes(tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, keys=np.array(["a", "b"]), proba=np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    c = ctx(tmp_path)
    t = registry.load("teacher", "predictions").from_params({"path": str(path)}, context=c)
    p1, _ = teacher_proba(t, c.labels, refs(["a", "b"], tmp_path), c.cache)
    assert c.cache.encoded_count == 2
    teacher_proba(t, c.labels, refs(["a", "b"], tmp_path), c.cache)
    assert c.cache.encoded_count == 2  # second call: from the cache
    np.savez(path, keys=np.array(["a", "b"]), proba=np.array([[0, 0, 1.0], [0, 1.0, 0]]))
    t2 = registry.load("teacher", "predictions").from_params({"path": str(path)}, context=c)
    p2, _ = teacher_proba(t2, c.labels, refs(["a", "b"], tmp_path), c.cache)
    assert c.cache.encoded_count == 4
    assert p2[0].tolist() == [0, 0, 1] and p1[0].tolist() == [1, 0, 0]


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        registry.load("teacher", "predictions").from_params({"path": "nope.npz"}, context=ctx(tmp_path))
    np.savez(tmp_path / "t.npz", keys=np.array(["a"]), labels=np.array(["cat", "dog", "yak"]), proba=np.ones((1, 3)))
    t = registry.load("teacher", "predictions").from_params({"path": str(tmp_path / "t.npz")}, context=ctx(tmp_path))
    with pytest.raises(ConfigError, match="missing 'eel'; unknown 'yak'"):
        t.predict_proba(refs(["a"], tmp_path))
