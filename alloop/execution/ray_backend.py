"""The Ray backend: Ray tasks for per-shard work, Ray Data (an actor pool) for encoding.

What runs where: the driver (``alloop run`` / ``serve``) plans the round, reads and writes the
database and the feature cache's index, and gathers results; Ray workers run ``fn(shard,
shared)`` and the encoder's ``encode``. Workers read the pool's files and the feature cache
themselves, so the work dir must be on storage that every node mounts at the same path
(checked when the backend opens).

Encoding: Ray Data ``map_batches`` with a callable class on an actor pool (one actor per GPU
when the cluster has GPUs, else one per CPU), so a model loads once per actor. Ray Data does not
run over Ray Client (``ray://``, Ray 2.60: ``'Worker' object has no attribute 'core_worker'``);
there, batches go to plain Ray tasks and each worker process keeps the last encoder it
deserialized (its loaded model) for the next batch.

Failures: a task whose worker process or node dies is retried up to ``[execution]
max_retries`` times (Ray's system-failure retries; an encoding actor is restarted as often);
an exception raised by the work itself is not retried and surfaces as itself, with its
message. When retries run out the call raises :class:`~alloop.errors.ExecutionError`.

Stateful shard workers (:meth:`RayBackend.shard_workers`): one actor per shard, holding no CPU
(so they never starve the tasks of the same cluster; they compute only while the driver waits on
a call), spread over the nodes. An actor keeps state, so a dead one is not restarted: the call
raises :class:`~alloop.errors.ExecutionError`, the group ends its other actors, and the step that
used it (a selection) writes nothing and runs again on the next tick.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from alloop.errors import ConfigError, ExecutionError
from alloop.execution import _ray_connect
from alloop.execution.base import DEFAULT_SHARD_ROWS, EncodedBatch
from alloop.execution.shared import SharedArray, file_backing
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import Encoder, SampleRef

if TYPE_CHECKING:
    from alloop.config import ExecutionConfig

__all__ = ["RayBackend", "RayShardGroup"]

logger = logging.getLogger(__name__)

S = TypeVar("S")
R = TypeVar("R")


def _run_shard(fn: Callable[[Any, Any], Any], shard: Any, shared: Any) -> Any:
    """The Ray task: Ray resolves ``shared`` (an object ref) to the value before the call."""
    return fn(shard, shared)


def _from_ray(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module == "ray" or module.startswith("ray.")


def _user_exception(exc: BaseException) -> BaseException | None:
    """The exception the user's code raised, inside Ray's wrappers (None for a system failure)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if not _from_ray(cur):
            return cur
        nxt = getattr(cur, "cause", None)
        cur = nxt if isinstance(nxt, BaseException) else cur.__cause__
    return None


class _ShardHost:
    """The Ray actor around one shard worker (the worker's class needs no Ray decorator)."""

    def __init__(self) -> None:
        self.worker: Any = None

    def start(self, cls: Callable[[Any, Any], Any], shard: Any, shared: Any) -> int:
        """Build the worker; returns this process's id."""
        self.worker = cls(shard, shared)
        return os.getpid()

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.worker, method)(*args)


_INLINE_BYTES = 1 << 16  # a broadcast argument larger than this goes to the object store once


class RayShardGroup:
    """Per-shard workers as Ray actors; see :class:`alloop.execution.base.ShardGroup`.

    Attributes
    ----------
    pids : list of int
        The actors' process ids, in shard order.
    """

    def __init__(self, backend: RayBackend, actors: list[Any], pids: list[int], what: str, name: str) -> None:
        self._backend, self._actors, self.pids = backend, actors, pids
        self._what, self._name = what, name

    @property
    def size(self) -> int:
        return len(self._actors)

    def call(self, method: str, *args: Any) -> list[Any]:
        if not self._actors:
            raise ExecutionError(f"{self._what}: this group of shard workers is closed.")
        ray = self._backend._ray
        if len(self._actors) > 1:
            args = tuple(ray.put(a) if getattr(a, "nbytes", 0) > _INLINE_BYTES else a for a in args)
        refs = [actor.call.remote(method, *args) for actor in self._actors]
        return self._backend._gather(refs, self._what, f"{self._name}.{method}", self.close)

    def close(self) -> None:
        actors, self._actors = self._actors, []
        for actor in actors:
            try:
                self._backend._ray.kill(actor, no_restart=True)
            except Exception:  # already dead
                logger.debug("ray.kill", exc_info=True)

    def __enter__(self) -> RayShardGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RayBackend:
    """Per-shard work on a Ray cluster. Build it with :meth:`connect` (or ``open_backend``).

    Parameters
    ----------
    ray : module
        The imported ``ray``, initialized.
    max_retries : int
        Retries of a task whose worker died (``[execution] max_retries``).
    owned : bool
        Whether this backend called ``ray.init`` (then :meth:`close` shuts Ray down).
    encode_actors : int, optional
        Encoding actors; default one per GPU of the cluster if it has GPUs, else one per CPU.
    client : bool
        Connected through Ray Client (``ray://``): encoding uses tasks, not Ray Data.
    shard_rows : int
        ``[execution] shard_rows``: rows per shard of per-shard work.
    """

    name = "ray"

    def __init__(self, ray: ModuleType, *, max_retries: int, owned: bool, encode_actors: int | None = None,
                 client: bool = False, shard_rows: int = DEFAULT_SHARD_ROWS) -> None:
        self._ray = ray
        self.max_retries = max_retries
        self.owned = owned
        self.encode_actors = encode_actors
        self.client = client
        self.shard_rows = int(shard_rows)
        self._task = ray.remote(_run_shard)
        self._host = ray.remote(_ShardHost)
        self._closed = False
        self.work_dir: Path | None = None  # files under it are read in place by the workers
        self._warming: list[Any] = []

    @classmethod
    def connect(
        cls,
        config: ExecutionConfig,
        *,
        work_dir: Path | None = None,
        timeout: float | None = None,
        encode_actors: int | None = None,
    ) -> RayBackend:
        """Connect to (or start) the cluster ``config.address`` names; see :func:`alloop.execution.open_backend`.

        ``timeout``: seconds to reach the head (default ``CONNECT_TIMEOUT_S``, 10).
        """
        ray = _ray_connect.import_ray()
        target = _ray_connect.parse_address(config.address)
        owned = not ray.is_initialized()
        if owned:
            _ray_connect.init(ray, target, _ray_connect.CONNECT_TIMEOUT_S if timeout is None else timeout)
        else:
            logger.info("Ray is already initialized in this process: using that cluster (not %r)", target.given)
        backend = cls(ray, max_retries=config.max_retries, owned=owned, encode_actors=encode_actors,
                      client=_ray_connect.is_client(ray), shard_rows=config.shard_rows)
        if work_dir is not None:
            try:
                _ray_connect.check_work_dir(ray, work_dir)
            except BaseException:
                backend.close()
                raise
            backend.work_dir = Path(work_dir).resolve()
        if not backend.client:  # the first shards then start in warm workers
            backend._warming = _ray_connect.warm_up(ray)
            _ray_connect.wait_warm(ray, backend._warming)
        logger.info("Ray backend: %s, %d CPUs, %d GPUs", target.given, backend.workers, backend.gpus)
        return backend

    # -- cluster facts --------------------------------------------------------------------
    @property
    def workers(self) -> int:
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    @property
    def gpus(self) -> int:
        return int(self._ray.cluster_resources().get("GPU", 0))

    # -- work -----------------------------------------------------------------------------
    def _failure(self, exc: BaseException, what: str, where: str) -> BaseException:
        """The user's exception inside a Ray error, else an ExecutionError saying what died."""
        user = _user_exception(exc)
        if user is not None:
            return user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return ExecutionError(
            f"{what}: Ray could not run {where}: {type(exc).__name__}: {first}. A task whose worker process or "
            f"node dies is retried up to [execution] max_retries = {self.max_retries} times. Check the nodes' "
            "memory and logs (`ray status`, `ray logs` on the head), or raise max_retries."
        )

    def _get(self, ref: Any, what: str, where: str) -> Any:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:
            raise self._failure(exc, what, where) from exc

    def _cancel(self, refs: Iterable[Any]) -> None:
        for ref in refs:
            try:
                self._ray.cancel(ref)
            except Exception:  # already finished or gone
                logger.debug("ray.cancel", exc_info=True)

    def map_shards(
        self,
        fn: Callable[[S, Any], R],
        shards: Sequence[S],
        shared: Any = None,
        *,
        what: str,
        progress: Progress = NULL_PROGRESS,
    ) -> list[R]:
        self._check_open()
        ray = self._ray
        if not shards:
            return []
        shared_ref = None if shared is None else ray.put(shared)  # one copy per call, not one per task
        task = self._task.options(max_retries=self.max_retries, retry_exceptions=False)
        refs = [task.remote(fn, shard, shared_ref) for shard in shards]
        position = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        try:
            with progress.task(what, total=len(refs)) as bar:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        where = f"shard {position[ref]} of {len(refs)} ({getattr(fn, '__qualname__', fn)})"
                        results[position[ref]] = self._get(ref, what, where)
                        bar.advance()
        finally:
            self._cancel(pending)
        return results

    def shard_workers(self, cls: Callable[[S, Any], Any], shards: Sequence[S], shared: Any = None, *,
                      what: str) -> RayShardGroup:
        """One actor per shard (no CPU held, ``SPREAD`` over the nodes, never restarted), each
        building ``cls(shard, shared)``; ``shared`` goes to the object store once."""
        self._check_open()
        ray = self._ray
        name = getattr(cls, "__qualname__", repr(cls))
        host = self._host.options(num_cpus=0, max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD")
        actors = [host.remote() for _ in shards]
        shared_ref = None if shared is None else ray.put(shared)
        refs = [a.start.remote(cls, shard, shared_ref) for a, shard in zip(actors, shards, strict=True)]
        group = RayShardGroup(self, actors, [], what, name)
        group.pids = self._gather(refs, what, f"{name}.__init__", group.close)
        return group

    def _gather(self, refs: list[Any], what: str, method: str, on_error: Callable[[], None]) -> list[Any]:
        """The results of one call per shard worker, in shard order; on any failure ``on_error``
        (end the group) and raise the worker's exception, or ExecutionError for a dead actor."""
        ray = self._ray
        out = []
        try:
            for i, ref in enumerate(refs):
                try:
                    out.append(ray.get(ref))
                except ray.exceptions.RayError as exc:
                    user = _user_exception(exc)
                    if user is not None:
                        raise user from exc
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise ExecutionError(
                        f"{what}: the Ray actor of shard {i} of {len(refs)} died in {method}: "
                        f"{type(exc).__name__}: {first}. A shard worker holds state and is not restarted; "
                        "nothing was written, and the step runs again on the next tick. Check the nodes' "
                        "memory and logs (`ray status`, `ray logs` on the head)."
                    ) from exc
        except BaseException:
            on_error()
            raise
        return out

    def share(self, X: Any) -> SharedArray:
        """A file region under the checked work dir travels as its path (every node maps the same
        file); anything else is put in the object store once."""
        self._check_open()
        import numpy as np

        X = np.asarray(X)
        shape = tuple(int(s) for s in X.shape)
        backing = file_backing(X)
        if backing is not None and self.work_dir is not None and backing[0].resolve().is_relative_to(self.work_dir):
            return SharedArray(shape, X.dtype.str, path=str(backing[0]), offset=backing[1])
        return SharedArray(shape, X.dtype.str, ref=self._ray.put(np.ascontiguousarray(X)))

    def encode(self, encoder: Encoder, samples: Sequence[SampleRef], batch_size: int) -> Iterator[EncodedBatch]:
        """Encode on the cluster; batches come back in input order (see the module's notes)."""
        self._check_open()
        if not samples:
            return
        if self.client:
            yield from self._encode_with_tasks(encoder, samples, batch_size)
        else:
            yield from self._encode_with_ray_data(encoder, samples, batch_size)

    def _encode_with_ray_data(self, encoder: Encoder, samples: Sequence[SampleRef],
                              batch_size: int) -> Iterator[EncodedBatch]:
        ray = self._ray
        try:
            import ray.data
        except ImportError as exc:
            raise ConfigError(
                "Encoding on Ray needs Ray Data, which is not installed here: pip install 'alloop[ray]'."
            ) from exc
        from alloop.execution._ray_encode import EncodeActor, from_table, to_table

        blocks = [ray.put(to_table(samples[i : i + batch_size])) for i in range(0, len(samples), batch_size)]
        gpus = self.gpus
        options: dict[str, Any] = {
            "fn_constructor_kwargs": {"encoder": encoder},
            "batch_size": batch_size,
            "batch_format": "pyarrow",
            "compute": ray.data.ActorPoolStrategy(size=min(len(blocks), self.encode_actors or gpus or self.workers)),
        }
        if gpus:
            options["num_gpus"] = 1
        ds = self._map_batches(ray.data.from_arrow_refs(blocks), EncodeActor, options)
        ctx = ds.context
        ctx.execution_options.preserve_order = True  # blocks come back in input order
        ctx.enable_progress_bars = False  # the caller reports progress
        data_logger = logging.getLogger("ray.data")
        level = data_logger.level
        data_logger.setLevel(logging.ERROR)  # Ray Data's per-run INFO lines are not the CLI's output
        try:
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                yield from_table(table)
        except Exception as exc:
            if not _from_ray(exc):
                raise
            raise self._failure(exc, "Encoding samples", f"a batch ({type(encoder).__name__})") from exc
        finally:
            data_logger.setLevel(level)

    def _map_batches(self, ds: Any, fn: type, options: dict[str, Any]) -> Any:
        """``ds.map_batches`` with restarts bounded by max_retries where this Ray allows it.

        Ray Data restarts a dead actor and retries its task without limit by default; the
        bound goes through ``ray_remote_args``, deprecated in Ray 2.5x (to go in 2.64), hence
        the fallback to Ray's defaults.
        """
        bounds = {"max_restarts": self.max_retries, "max_task_retries": self.max_retries}
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
                return ds.map_batches(fn, **options, **bounds)
        except TypeError:
            logger.debug("this Ray Data takes no max_restarts: encoding actors restart without limit")
            return ds.map_batches(fn, **options)

    def _encode_with_tasks(self, encoder: Encoder, samples: Sequence[SampleRef],
                           batch_size: int) -> Iterator[EncodedBatch]:
        """One Ray task per batch, a bounded window in flight, results in batch order."""
        from alloop.execution._ray_encode import encode_task

        ray = self._ray
        gpus = self.gpus
        task = ray.remote(encode_task).options(
            max_retries=self.max_retries, retry_exceptions=False, **({"num_gpus": 1} if gpus else {}))
        encoder_ref = ray.put(encoder)
        window = 2 * (self.encode_actors or gpus or self.workers)
        inflight: deque[Any] = deque()
        where = f"a batch ({type(encoder).__name__})"
        try:
            for start in range(0, len(samples), batch_size):
                inflight.append(task.remote(encoder_ref, list(samples[start : start + batch_size])))
                if len(inflight) >= window:
                    yield self._get(inflight.popleft(), "Encoding samples", where)
            while inflight:
                yield self._get(inflight.popleft(), "Encoding samples", where)
        finally:
            self._cancel(inflight)

    # -- lifetime -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ExecutionError("This Ray backend is closed; open a new one with alloop.execution.open_backend.")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.owned and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RayBackend(max_retries={self.max_retries}, owned={self.owned})"
