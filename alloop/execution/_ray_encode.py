"""What runs on Ray workers to encode: Ray Data's actor class and its Arrow tables, and the
plain task used over Ray Client.

Samples travel as pickled :class:`~alloop.protocols.SampleRef` values (one Arrow binary cell
each), features come back as the float32 bytes of each row, so blocks of any encoder's output
have one schema whatever their dimension, and unreadable samples need no placeholder row.

An exception from the encoder (other than a :class:`~alloop.errors.SampleDecodeError`, which
quarantines its sample) comes back pickled in an ``error`` cell and is raised again on the
driver: Ray Data would wrap it in a ``UserCodeException`` that keeps only its text.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from alloop.errors import ExecutionError
from alloop.execution.base import EncodedBatch, encode_batch
from alloop.protocols import Encoder, SampleRef


def to_table(samples: Sequence[SampleRef]) -> Any:
    """A pyarrow table ``(hash: string, ref: binary)`` of ``samples``."""
    import pyarrow as pa

    return pa.table({
        "hash": pa.array([s.content_hash for s in samples], pa.string()),
        "ref": pa.array([pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL) for s in samples], pa.binary()),
    })


class EncodeActor:
    """A Ray Data callable class: holds one encoder (a model loads once per actor)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def __call__(self, batch: Any) -> Any:
        refs = [pickle.loads(b) for b in batch.column("ref").to_pylist()]
        try:
            out = encode_batch(self.encoder, refs)
        except Exception as exc:
            return _table([""], [False], [b""], [""], [_pickled(exc)])
        feats = {h: out.rows[i].tobytes() for i, h in enumerate(out.hashes)}
        hashes = [s.content_hash for s in refs]
        return _table(hashes, [h in feats for h in hashes], [feats.get(h, b"") for h in hashes],
                      [out.failures.get(h, "") for h in hashes], [b""] * len(hashes))


def _pickled(exc: Exception) -> bytes:
    try:
        data = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(ExecutionError(f"The encoder raised {type(exc).__name__}: {exc}"))


def _table(hashes: list[str], ok: list[bool], feats: list[bytes], reasons: list[str], errors: list[bytes]) -> Any:
    import pyarrow as pa

    return pa.table({
        "hash": pa.array(hashes, pa.string()),
        "ok": pa.array(ok, pa.bool_()),
        "feat": pa.array(feats, pa.binary()),
        "reason": pa.array(reasons, pa.string()),
        "error": pa.array(errors, pa.binary()),
    })


def from_table(table: Any) -> EncodedBatch:
    """The :class:`EncodedBatch` an :class:`EncodeActor` output block holds; raises its error, if any."""
    for err in table.column("error").to_pylist():
        if err:
            raise pickle.loads(err)
    hashes = table.column("hash").to_pylist()
    ok = table.column("ok").to_pylist()
    feats = table.column("feat").to_pylist()
    reasons = table.column("reason").to_pylist()
    good = [h for h, o in zip(hashes, ok) if o]
    data = bytearray(b"".join(f for f, o in zip(feats, ok) if o))
    if not good:
        rows = np.zeros((0, 0), dtype=np.float32)
    elif not data:
        rows = np.zeros((len(good), 0), dtype=np.float32)
    else:
        rows = np.frombuffer(data, dtype=np.float32).reshape(len(good), -1)
    failures = {h: r for h, o, r in zip(hashes, ok, reasons) if not o}
    return EncodedBatch(good, rows, failures, len(hashes))


#: the encoder a worker process deserialized last, by fingerprint (its model stays loaded)
_WORKER_ENCODER: dict[str, Encoder] = {}


def encode_task(encoder: Encoder, batch: Sequence[SampleRef]) -> EncodedBatch:
    """A Ray task encoding one batch; the worker process keeps its first copy of the encoder.

    Ray hands each task a freshly deserialized encoder; an encoder that loads a model on first
    use would load it again for every batch. Keeping the first copy per fingerprint (one at a
    time) makes a worker process behave like an actor.
    """
    key = f"{type(encoder).__module__}.{type(encoder).__qualname__}:{encoder.fingerprint()}"
    kept = _WORKER_ENCODER.get(key)
    if kept is None:
        _WORKER_ENCODER.clear()
        kept = _WORKER_ENCODER[key] = encoder
    return encode_batch(kept, batch)
