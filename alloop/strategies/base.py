"""What every acquisition strategy shares: the context it reads, the Selection it returns.

A strategy is a thin, frozen, pydantic-validated parameter holder with one method,
:meth:`Strategy.select`. The heavy lifting lives in pure functions over arrays
(``alloop.strategies._scores``, ``alloop.strategies.kcenter``). Strategies never train
models: they declare the arrays they need in ``requires`` and the controller computes
only those.

Positions everywhere are row indices into the context's arrays (the *pool*). The
controller alone turns positions into database ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict
from typing_extensions import Self

from alloop.checks import check_int
from alloop.errors import ConfigError, EmptyPoolError, InvalidInputError, PoolExhaustedError
from alloop.params import parse_params
from alloop.protocols.context import PluginContext

if TYPE_CHECKING:
    from pathlib import Path

    from alloop.execution.base import Backend

#: The arrays a strategy may ask for.
KNOWN_REQUIREMENTS = frozenset({"proba", "embeddings", "labels", "keys", "objects", "penultimate", "members"})


def array_digest(X: NDArray[Any]) -> str:
    """SHA-256 of an array's bytes, shape and dtype: names a pool's embeddings in a cache."""
    X = np.ascontiguousarray(X)
    h = hashlib.sha256(X.data)
    h.update(f"{X.shape}{X.dtype}".encode())
    return h.hexdigest()


_T = TypeVar("_T")


class PoolCache(Generic[_T]):
    """What a strategy computes once per pool (a clustering, a graph), kept for the process:
    at most ``keep`` entries, the oldest dropped first. Keys start with the embeddings'
    :func:`array_digest`, then the parameters the result depends on."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._items: dict[tuple[Any, ...], _T] = {}

    def get(self, key: tuple[Any, ...], compute: Callable[[], _T]) -> _T:
        """The kept result for ``key``, else ``compute()``, kept."""
        if key not in self._items:
            got = compute()
            while len(self._items) >= self.keep:
                self._items.pop(next(iter(self._items)))
            self._items[key] = got
        return self._items[key]

    def clear(self) -> None:
        self._items.clear()


@dataclass(frozen=True)
class Selection:
    """What a strategy picked, in pick order.

    Attributes
    ----------
    positions : ndarray of shape (k,), int64
        Pool positions of the picked samples; unique, all among the candidates.
    scores : ndarray of shape (k,), float64
        The informativeness of each pick when it was made (higher = more informative).
    """

    positions: NDArray[np.int64]
    scores: NDArray[np.float64]

    def __post_init__(self) -> None:
        pos = np.ascontiguousarray(self.positions, dtype=np.int64).reshape(-1)
        sc = np.ascontiguousarray(self.scores, dtype=np.float64).reshape(-1)
        if pos.shape != sc.shape:
            raise ValueError(
                f"Selection needs one score per position; got {pos.size} positions and {sc.size} scores."
            )
        if np.unique(pos).size != pos.size:
            raise ValueError("Selection positions must be unique.")
        pos.setflags(write=False)
        sc.setflags(write=False)
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "scores", sc)

    def __len__(self) -> int:
        return int(self.positions.size)


@dataclass(frozen=True)
class SelectionContext:
    """Everything a strategy may read. Arrays are indexed by pool position.

    Attributes
    ----------
    n_samples : int
        Number of pool positions.
    candidates : ndarray of shape (m,), int64
        Positions that may be selected (unlabeled, never selected before), ascending.
    labeled : ndarray of shape (l,), int64
        Positions whose labels are known (used as initial centres by coreset-type methods).
    rng : numpy.random.Generator
        The only source of randomness; derived from (project seed, round number).
    proba : ndarray of shape (n_samples, n_classes), optional
        Model class probabilities (rows sum to 1).
    embeddings : ndarray of shape (n_samples, n_features), optional
        Model or encoder features.
    labels : ndarray of shape (n_samples,), int64, optional
        Class index of labeled positions, -1 elsewhere.
    keys : ndarray of shape (n_samples,), str, optional
        The stable sample key of every position; only for strategies that declare ``"keys"`` in
        ``requires`` (loading millions of keys costs time and memory the others do not need).
    extras : dict
        Anything else a strategy needs, keyed by requirement: ``"objects"`` (object proposals),
        ``"penultimate"`` (the model's penultimate features, ``(n_samples, d)``, for BADGE),
        ``"members"`` (each ensemble member's probabilities, ``(n_samples, members, classes)``).
    backend : Backend, optional
        The project's execution backend (``[execution]``), given to strategies that set
        ``uses_backend``: they may run per-shard work on it (the distributed k-center greedy).
        None: everything runs in this process.
    n_classes : int, optional
        The project's number of classes (the label set's size), when known.
    cache_dir : Path, optional
        A folder where a strategy may keep what it computes once for a pool and reuses in later
        rounds and processes (Cluster-Margin's clustering), under a subfolder of its name, each
        file named by the content it was computed from. None: keep nothing.
    """

    n_samples: int
    candidates: NDArray[np.int64]
    labeled: NDArray[np.int64]
    rng: np.random.Generator
    proba: NDArray[Any] | None = None
    embeddings: NDArray[Any] | None = None
    labels: NDArray[np.int64] | None = None
    keys: NDArray[np.str_] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    backend: Backend | None = None
    n_classes: int | None = None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        for name in ("candidates", "labeled"):
            arr = np.asarray(getattr(self, name), dtype=np.int64).reshape(-1)
            if arr.size and (arr.min() < 0 or arr.max() >= self.n_samples):
                raise InvalidInputError(f"{name} positions must lie in [0, {self.n_samples}).")
            object.__setattr__(self, name, arr)
        for name in ("proba", "embeddings", "labels", "keys"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != self.n_samples:
                raise InvalidInputError(
                    f"{name} has {len(arr)} rows but the pool has {self.n_samples} positions."
                )

    def require(self, name: str) -> Any:
        """Return the array ``name`` or raise a clear error if the controller did not provide it."""
        value = self.extras.get(name) if name not in ("proba", "embeddings", "labels", "keys") else getattr(self, name)
        if value is None:
            raise ConfigError(
                f"This strategy needs {name!r} but the context has none; declare it in the "
                f"strategy's `requires` so the controller computes it."
            )
        return value


class Strategy(BaseModel):
    """Base class of acquisition strategies: parameters only, plus :meth:`select`.

    Subclasses set ``name`` and ``requires`` and implement :meth:`_select`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ClassVar[str] = "strategy"
    requires: ClassVar[frozenset[str]] = frozenset()
    #: Whether :meth:`_select` can use ``ctx.backend`` (the controller then passes it).
    uses_backend: ClassVar[bool] = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None, *,
                    context: PluginContext | None = None) -> Self:
        """Build from the ``[strategy] params`` of a project file (strategies need no context)."""
        return parse_params(cls, params, f"parameters of strategy {cls.name!r}")

    def select(self, ctx: SelectionContext, k: int) -> Selection:
        """Pick ``k`` candidates.

        Raises
        ------
        EmptyPoolError
            If there are no candidates.
        PoolExhaustedError
            If ``k`` exceeds the number of candidates.
        """
        check_int("The batch size", k, 1)
        m = int(ctx.candidates.size)
        if m == 0:
            raise EmptyPoolError(
                "There are no unlabeled candidates left to select from. Import more samples "
                "or stop the loop."
            )
        if k > m:
            raise PoolExhaustedError(int(k), m)
        for req in self.requires:
            ctx.require(req)
        sel = self._select(ctx, int(k))
        if len(sel) != k:
            raise RuntimeError(f"{type(self).__name__} returned {len(sel)} picks, expected {k}.")
        return sel

    def _select(self, ctx: SelectionContext, k: int) -> Selection:  # pragma: no cover
        raise NotImplementedError
