"""The local backend, the address forms, the encoding actor's tables: no Ray cluster needed."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from alloop.config import ExecutionConfig
from alloop.errors import ConfigError, ExecutionError, SampleDecodeError
from alloop.execution import Backend, LocalBackend, encode_batch, open_backend
from alloop.execution._ray_connect import Target, parse_address
from alloop.execution._ray_encode import EncodeActor, encode_task, from_table, to_table
from alloop.features.cache import FeatureCache
from alloop.features.hashing import HashingTextEncoder
from alloop.protocols import SampleRef
from tests.helpers.progress import RecordingProgress


def _stats(shard, shared):
    lo, hi = shard
    return float(shared[lo:hi].sum()), shard


def test_local_backend_is_a_plain_loop_in_shard_order():
    data = np.arange(10.0)
    progress = RecordingProgress()
    with open_backend(None) as backend:
        assert isinstance(backend, LocalBackend) and isinstance(backend, Backend) and backend.workers == 1
        got = backend.map_shards(_stats, [(5, 10), (0, 5)], data, what="Scoring", progress=progress)
    assert got == [(35.0, (5, 10)), (10.0, (0, 5))]
    assert progress.tasks == [["Scoring", 2, 2]]
    assert isinstance(open_backend(ExecutionConfig()), LocalBackend)


def _texts(tmp_path, bad=()):
    return [SampleRef(f"k{i}", "text", f"{i:04x}", {"text": f"t {i}"} if i not in bad else {}, tmp_path)
            for i in range(7)]


def test_encode_batch_quarantines_only_unreadable_samples(tmp_path):
    enc = HashingTextEncoder(n_features=8)
    whole = encode_batch(enc, _texts(tmp_path))
    part = encode_batch(enc, _texts(tmp_path, bad={2, 5}))
    assert whole.count == part.count == 7 and not whole.failures
    assert part.hashes == ["0000", "0001", "0003", "0004", "0006"] and set(part.failures) == {"0002", "0005"}
    np.testing.assert_array_equal(part.rows, whole.rows[[0, 1, 3, 4, 6]])
    none = encode_batch(enc, _texts(tmp_path, bad=set(range(7))))
    assert none.rows.shape == (0, 0) and len(none.failures) == 7


def test_feature_cache_takes_a_backend_and_keeps_its_files(tmp_path):
    enc = HashingTextEncoder(n_features=8)
    X1, f1 = FeatureCache(tmp_path / "a", chunk_rows=3, batch_size=2).get(_texts(tmp_path, bad={4}), enc)
    X2, f2 = FeatureCache(tmp_path / "b", chunk_rows=3, batch_size=2, backend=LocalBackend()).get(
        _texts(tmp_path, bad={4}), enc)
    np.testing.assert_array_equal(X1, X2)
    assert f1 == f2 == {"k4": "expected data {'text': <str>}, got {}"}
    names = lambda root: sorted(len(p.read_text()) for p in root.rglob("*.keys.json"))  # noqa: E731
    assert names(tmp_path / "a") == names(tmp_path / "b")


def test_actor_tables_round_trip_features_failures_and_errors(tmp_path):
    """What a Ray Data actor computes, run in this process: same rows, same quarantine."""
    enc = HashingTextEncoder(n_features=8)
    samples = _texts(tmp_path, bad={1})
    out = from_table(EncodeActor(enc)(to_table(samples)))
    expected = encode_batch(enc, samples)
    assert out.hashes == expected.hashes and out.failures == expected.failures and out.count == 7
    np.testing.assert_array_equal(out.rows, expected.rows)
    image = [SampleRef("img", "image", "ff", {"path": "x.png"}, tmp_path)]
    with pytest.raises(ConfigError, match="reads text samples, but sample 'img'"):
        from_table(EncodeActor(enc)(to_table(image)))  # the encoder's own error, raised again here

    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("no")

    class Broken:
        def encode(self, samples, progress):
            raise Unpicklable("model weights are corrupt")

    with pytest.raises(ExecutionError, match="The encoder raised Unpicklable: model weights are corrupt"):
        from_table(EncodeActor(Broken())(to_table(samples)))
    assert issubclass(SampleDecodeError, ValueError)


def test_a_worker_keeps_the_first_copy_of_an_encoder(tmp_path):
    """Over Ray Client every task gets a fresh copy: the worker reuses the one whose model loaded."""
    first, second, other = HashingTextEncoder(n_features=8), HashingTextEncoder(n_features=8), HashingTextEncoder()
    calls = []
    for enc in (first, second, other):
        object.__setattr__(enc, "encode", lambda s, p, enc=enc: calls.append(enc) or np.zeros((len(s), 1)))
    for enc in (first, second, other):
        assert encode_task(enc, _texts(tmp_path)).count == 7
    assert [id(c) for c in calls] == [id(first), id(first), id(other)]


@pytest.mark.parametrize(("address", "target"), [
    (None, Target("local", "local")),
    ("local", Target("local", "local")),
    ("10.0.0.5:6379", Target("10.0.0.5:6379", "gcs", "10.0.0.5", 6379)),
    ("ray://head-svc:10001", Target("ray://head-svc:10001", "client", "head-svc", 10001)),
    ("[::1]:6379", Target("[::1]:6379", "gcs", "::1", 6379)),
])
def test_address_forms(address, target):
    assert parse_address(address) == target
    if target.kind != "local":
        assert target.url.endswith(f":{target.port}")


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'alloop\[ray\]'"):
        open_backend(ExecutionConfig(backend="ray", address="127.0.0.1:6379"))
