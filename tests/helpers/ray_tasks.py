"""Work functions and an encoder the Ray tests send to workers (importable there: the test
cluster's nodes have the repository on ``PYTHONPATH``).

The kill handshake: the victim's first attempt publishes its pid (a file created exclusively,
so only one attempt ever does) and then blocks; the test kills that process and only then
writes ``killed``. The retry finds the pid file, records ``retried`` and does the work. A
first attempt that is not killed sees ``killed`` and fails, so the test fails instead of
hanging.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import Encoder, SampleRef

PID_FILE = "victim.pid"


def _first_attempt_blocks(folder: Path, timeout: float = 120) -> None:
    """On the first attempt only: publish this pid, then wait to be killed."""
    tmp = folder / f"pid-{os.getpid()}-{time.monotonic_ns()}"
    tmp.write_text(str(os.getpid()))
    try:
        os.link(tmp, folder / PID_FILE)  # atomic and exclusive: fails once an attempt published
    except FileExistsError:
        (folder / "retried").touch()
        return
    finally:
        tmp.unlink()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / "killed").exists():
            raise RuntimeError(f"process {os.getpid()} was to be killed by the test but is alive")
        time.sleep(0.05)
    raise RuntimeError("the test never killed this process")


# --- map_shards -----------------------------------------------------------------------------
def shard_stats(shard: tuple[str, int, int], shared: Any) -> dict[str, Any]:
    """Row norms' sum, the top-3 rows by a linear score, and a checksum of a memory-mapped shard."""
    path, start, stop = shard
    X = np.load(path, mmap_mode="r")[start:stop]
    w = shared["weights"] if isinstance(shared, dict) else shared.weights
    scores = X @ w
    top = np.argsort(-scores, kind="stable")[:3] + start
    return {"norms": float(np.linalg.norm(X, axis=1).sum()), "top": top.tolist(), "sum": float(X.sum(dtype=np.float64))}


def shard_stats_kill_once(shard: tuple[str, int, int], shared: Any) -> dict[str, Any]:
    if shard[1] == shared["victim_start"]:
        _first_attempt_blocks(Path(shared["handshake"]))
    return shard_stats(shard, shared)


def fail_on(shard: int, shared: Any) -> int:
    """Raises on shard ``shared["bad"]``; every attempt leaves a file, to count them."""
    Path(shared["attempts"], f"{shard}-{os.getpid()}-{time.monotonic_ns()}").touch()
    if shard == shared["bad"]:
        raise ValueError(f"shard {shard} is bad: made to fail")
    return shard


class CountingShared:
    """A shared object that counts how often it is pickled (in the process that pickles it)."""

    pickled = 0

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    def __getstate__(self) -> dict[str, Any]:
        type(self).pickled += 1
        return self.__dict__


# --- encoding -------------------------------------------------------------------------------
class KillOnceEncoder:
    """Wraps a real encoder; the batch holding sample ``victim`` blocks on its first attempt."""

    def __init__(self, inner: Encoder, handshake: str, victim: str) -> None:
        self.inner, self.handshake, self.victim = inner, handshake, victim

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def encode(self, samples: Sequence[SampleRef], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        if any(s.key == self.victim for s in samples):
            _first_attempt_blocks(Path(self.handshake))
        return self.inner.encode(samples, progress)


def square_sum(shard: int, shared: Any) -> int:
    return int(shard) ** 2 + int(np.sum(shared))


def die_on(shard: int, shared: Any) -> int:
    """Kills its own worker process on shard ``shared["bad"]``, on every attempt."""
    Path(shared["attempts"], f"{shard}-{os.getpid()}-{time.monotonic_ns()}").touch()
    if shard == shared["bad"]:
        os.kill(os.getpid(), 9)
    return shard


# --- a round's scoring ----------------------------------------------------------------------
class KillOnceLearner:
    """Wraps a fitted learner; in a process other than the driver, the first ``predict_proba`` of
    the shard starting with ``victim_row`` waits to be killed (the kill handshake above)."""

    def __init__(self, inner: Any, handshake: str, driver_pid: int) -> None:
        self.inner, self.handshake, self.driver_pid = inner, handshake, driver_pid
        self.name, self.requires = inner.name, inner.requires

    def fit(self, *args: Any, **kwargs: Any) -> KillOnceLearner:
        self.inner.fit(*args, **kwargs)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if os.getpid() != self.driver_pid and not Path(self.handshake, "done").exists():
            _first_attempt_blocks(Path(self.handshake))
            Path(self.handshake, "done").touch()
        return self.inner.predict_proba(X)

    def embed(self, X: np.ndarray) -> Any:
        return self.inner.embed(X)

    def save(self, file: Any) -> None:
        self.inner.save(file)

    @classmethod
    def load(cls, path: Any, params: Any = None) -> Any:
        raise NotImplementedError("the test reads models from memory only")


# --- the sharded k-center greedy ------------------------------------------------------------
def _kshard_base() -> type:
    from alloop.strategies.kcenter_sharded import _KShard

    return _KShard


class KillAtStepShard(_kshard_base()):  # type: ignore[misc]
    """A k-center shard worker; shard 1, at its 5th pick, waits to be killed (the handshake
    above, in the folder ``handshake`` beside the memory-mapped pool)."""

    def __init__(self, spec: Any, shared: Any) -> None:
        super().__init__(spec, shared)
        self.handshake = Path(shared.path).parent / "handshake"
        self.steps = 0

    def step(self, *args: Any) -> Any:
        self.steps += 1
        if self.spec.index == 1 and self.steps == 5:
            _first_attempt_blocks(self.handshake)
        return super().step(*args)
