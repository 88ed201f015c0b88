from __future__ import annotations

from pathlib import Path

import numpy as np

from alloop.errors import SampleDecodeError
from alloop.features.cache import FeatureCache
from alloop.protocols import SampleRef


class CountingEncoder:
    """A real (deterministic) encoder that counts calls and fails on 'bad' samples."""

    def __init__(self, version: str = "v1") -> None:
        self.version = version
        self.calls = 0

    def fingerprint(self) -> str:
        return f"counting-{self.version}"

    def encode(self, samples, progress):
        self.calls += len(samples)
        out = []
        for s in samples:
            if s.data.get("bad"):
                raise SampleDecodeError(s.key, "broken bytes")
            seed = int(s.content_hash, 16) % 1000
            out.append(np.random.default_rng(seed).normal(size=4) + (self.version == "v2"))
        return np.array(out, dtype=np.float32)


def refs(n, tmp_path: Path, bad=()):
    return [SampleRef(f"k{i}", "vector", f"{i:04x}", {"bad": i in bad}, tmp_path) for i in range(n)]


def test_second_run_hits_the_cache(tmp_path):
    enc = CountingEncoder()
    cache = FeatureCache(tmp_path / "c", chunk_rows=7, batch_size=5)
    X1, f1 = cache.get(refs(20, tmp_path), enc)
    assert enc.calls == 20 and f1 == {}
    enc2 = CountingEncoder()
    X2, _ = FeatureCache(tmp_path / "c").get(refs(20, tmp_path), enc2)  # a new process: reads disk
    assert enc2.calls == 0
    np.testing.assert_array_equal(X1, X2)
    X3, _ = FeatureCache(tmp_path / "c").get(refs(25, tmp_path), enc2)
    assert enc2.calls == 5  # only the new contents
    np.testing.assert_array_equal(X3[:20], X1)


def test_fingerprint_change_invalidates(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    X1, _ = cache.get(refs(5, tmp_path), CountingEncoder("v1"))
    enc = CountingEncoder("v2")
    X2, _ = cache.get(refs(5, tmp_path), enc)
    assert enc.calls == 5
    np.testing.assert_allclose(X2, X1 + 1, rtol=1e-6)


def test_unreadable_samples_are_reported_not_fatal(tmp_path):
    enc = CountingEncoder()
    X, failures = FeatureCache(tmp_path / "c", batch_size=4).get(refs(10, tmp_path, bad={3, 7}), enc)
    assert failures == {"k3": "broken bytes", "k7": "broken bytes"}
    assert X.shape == (8, 4)


def test_orphan_chunk_without_keys_is_ignored(tmp_path):
    folder = tmp_path / "c" / "counting-v1"
    folder.mkdir(parents=True)
    np.save(folder / "chunk-dead.npy", np.zeros((3, 4), dtype=np.float32))  # crash before keys file
    enc = CountingEncoder()
    X, _ = FeatureCache(tmp_path / "c").get(refs(3, tmp_path), enc)
    assert enc.calls == 3 and np.abs(X).sum() > 0
