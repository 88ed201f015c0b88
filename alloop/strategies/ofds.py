"""OFDS: object-focused selection of images for detection and segmentation (single pass).

After "Object-Focused Data Selection for Dense Prediction Tasks": images are chosen through
their *objects*, so that the selection covers every class, rare ones included, instead of the
image-level feature space (where a rare object is drowned by the background and the frequent
classes). There is no public reference code; the budget split, the cluster schedule and the
trimming below are alloop's design:

1. **Proposals.** A detector's autolabels: one row per object with the pool position of its
   image, its predicted class, its confidence and a feature vector (an image encoder applied to
   the object's crop, :func:`alloop.features.objects.object_features`), gathered in an
   :class:`ObjectSet`. Objects below ``min_score`` or in non-candidate images are ignored.
2. **Allocation.** The budget is split across the predicted classes by :func:`allocate`
   (uniform, ∝ sqrt(object count), ∝ object count), every class with objects getting at least
   one image when the budget allows; these are the class *quotas*.
3. **Clustering.** Per class, seeded k-means on the L2-normalised object features with
   ``k_c`` clusters (``k_c`` = the quota at first); the member nearest each centroid represents
   the cluster and brings its image. The union of those images over classes is the selection.
4. **Growth.** Two representatives may share an image, within a class or across classes, so
   the union is usually smaller than the budget: the cluster counts grow (the deficit,
   divided by the yield of new images per added cluster so far, is split by the same
   allocation over the classes with objects left) and the classes are re-clustered, warm-started
   from their centroids, until the union reaches the budget, or every object is its own
   cluster (the round after ``max_rounds``).
5. **Trimming.** If the union overshoots, images are removed from the most frequent classes
   first (:func:`trim_union`), never an image a rarer class needs.
6. **Fill.** If the proposals' images are fewer than the budget, the rest are candidate images
   without (kept) proposals, drawn at random (seeded).
7. **Order.** Classes take turns, rarest first, each giving its next image (by cluster size):
   any prefix of the selection is balanced across classes.

Cost: k-means is seeded by greedy k-means++ in float32 BLAS (scikit-learn's seeding upcasts
to float64 and is an order of magnitude slower at hundreds of clusters) and refined by
scikit-learn's Lloyd; a class with more than ``fit_size`` objects is fitted on a subsample and
every object then assigned to its nearest centroid. 1e5 objects of 512 dimensions in 20 classes,
budget 1000, take about 3-10 s on 2 cores, 2-3 clustering rounds.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from alloop.errors import ConfigError, EmptyPoolError, PoolExhaustedError
from alloop.rng import derive_rng, derive_seed
from alloop.strategies.base import Selection, SelectionContext, Strategy

__all__ = [
    "ALLOCATIONS",
    "ObjectSet",
    "OfdsStrategy",
    "allocate",
    "class_representatives",
    "interleave",
    "ofds_select",
    "trim_union",
]

logger = logging.getLogger(__name__)

ALLOCATIONS = ("uniform", "sqrt", "proportional")
Allocation = Literal["uniform", "sqrt", "proportional"]
_FRAC_DIGITS = 9  # fractional parts are compared rounded, so float noise cannot break ties
_CHUNK = 16384  # rows per block when measuring distances to centroids


# -- the proposals ---------------------------------------------------------------------------------


def _int_column(a, name: str, n: int | None) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1 or (arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer))):
        raise ConfigError(
            f"ObjectSet.{name} must be a 1-D array of non-negative integers, one per object; got "
            f"dtype {arr.dtype} and shape {arr.shape}. Convert it with np.asarray(..., dtype=np.int64)."
        )
    if n is not None and arr.size != n:
        raise ConfigError(
            f"ObjectSet.{name} has {arr.size} rows but ObjectSet.image has {n}; every column needs "
            "one row per object."
        )
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size and arr.min() < 0:
        raise ConfigError(
            f"ObjectSet.{name} must be non-negative; object {int(np.flatnonzero(arr < 0)[0])} has "
            f"{int(arr.min())}. Drop objects without an image or a class."
        )
    return arr


def _real_array(a, name: str, shape: tuple, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ConfigError(f"ObjectSet.{name} must hold real numbers; got dtype {arr.dtype}.")
    if arr.ndim != len(shape) or any(s is not None and s != g for s, g in zip(shape, arr.shape)):
        raise ConfigError(f"ObjectSet.{name} must have shape {what}; got shape {arr.shape}.")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1))[0])
        raise ConfigError(
            f"ObjectSet.{name} must be finite; object {bad} holds NaN or inf (or a value too large "
            "for float32). Drop that object or fix its proposal."
        )
    return arr


@dataclass(frozen=True)
class ObjectSet:
    """Object proposals of a pool, as columns over ``n`` objects.

    Attributes
    ----------
    image : ndarray of shape (n,), int64
        Pool position of the image each object is in.
    label : ndarray of shape (n,), int64
        Predicted class index of each object (any non-negative integers; need not be dense).
    score : ndarray of shape (n,), float32
        Detector confidence of each object.
    features : ndarray of shape (n, d), float32
        One feature vector per object (e.g. the embedding of its crop); finite.
    box : ndarray of shape (n, 4), float32, optional
        ``(x0, y0, x1, y1)`` of each object, for reference; OFDS does not read it.

    Arrays are converted (no copy when they already have the dtype) and are not copied
    otherwise: do not modify them afterwards. Positions are checked against the pool by
    :meth:`check_positions` (``ofds_select`` does it).
    """

    image: np.ndarray
    label: np.ndarray
    score: np.ndarray
    features: np.ndarray
    box: np.ndarray | None = None

    def __post_init__(self) -> None:
        image = _int_column(self.image, "image", None)
        n = int(image.size)
        label = _int_column(self.label, "label", n)
        score = _real_array(self.score, "score", (n,), f"({n},) (one per object)")
        features = np.asarray(self.features)
        if features.ndim != 2 or features.shape[0] != n or (features.shape[1] == 0):
            raise ConfigError(
                f"ObjectSet.features must have shape ({n}, d) with d >= 1 (one row per object); "
                f"got shape {features.shape}."
            )
        features = _real_array(features, "features", (n, None), f"({n}, d)")
        box = None
        if self.box is not None:
            box = _real_array(self.box, "box", (n, 4), f"({n}, 4) as (x0, y0, x1, y1)")
            bad = np.flatnonzero((box[:, 2] < box[:, 0]) | (box[:, 3] < box[:, 1]))
            if bad.size:
                raise ConfigError(
                    f"ObjectSet.box rows must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0; object "
                    f"{int(bad[0])} has {box[bad[0]].tolist()}. Convert (x, y, w, h) boxes first."
                )
        for name, value in (("image", image), ("label", label), ("score", score),
                            ("features", features), ("box", box)):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.image.size)

    @property
    def dim(self) -> int:
        """Feature dimension ``d``."""
        return int(self.features.shape[1])

    def check_positions(self, n_samples: int) -> None:
        """Raise ConfigError unless every ``image`` lies in ``[0, n_samples)``."""
        if self.image.size and self.image.max() >= n_samples:
            i = int(np.flatnonzero(self.image >= n_samples)[0])
            raise ConfigError(
                f"ObjectSet.image must hold pool positions in [0, {n_samples}); object {i} is in "
                f"image {int(self.image[i])}. Build the objects against the same pool as the "
                "selection context."
            )


# -- allocation ------------------------------------------------------------------------------------


def _count_array(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1 or (arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer))):
        raise ConfigError(f"{name} must be a 1-D array of integers; got dtype {arr.dtype}, shape {arr.shape}.")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ConfigError(f"{name} must be non-negative; got {int(arr.min())} at class {int(arr.argmin())}.")
    return arr


def _water_fill(w: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: int) -> np.ndarray:
    """Real shares ``x = clip(lam * w, lo, hi)`` with ``sum(x) == total`` (``sum lo <= total <= sum hi``).

    ``f(lam) = sum clip(lam w, lo, hi)`` is piecewise linear and non-decreasing with breakpoints
    at ``lo/w`` and ``hi/w``: find the segment holding ``total`` and solve on it.
    """
    bps = np.unique(np.concatenate([lo / w, hi / w]))
    F = np.clip(bps[:, None] * w[None, :], lo, hi).sum(axis=1)
    i = int(np.searchsorted(F, total, side="right")) - 1
    if i >= bps.size - 1 or F[i] == total:
        lam = bps[min(i, bps.size - 1)]
    else:
        lam = bps[i] + (total - F[i]) * (bps[i + 1] - bps[i]) / (F[i + 1] - F[i])
    return np.clip(lam * w, lo, hi)


def allocate(budget: int, counts, mode: Allocation = "sqrt", *, caps=None) -> np.ndarray:
    """Split ``budget`` image slots across classes with object counts ``counts``.

    Parameters
    ----------
    budget : int
        Slots to split, ``>= 0``.
    counts : array_like of shape (C,), int
        Objects per class. A class with 0 objects gets 0.
    mode : {"uniform", "sqrt", "proportional"}
        Weights of the split: 1, ``sqrt(count)`` or ``count``.
    caps : array_like of shape (C,), int, optional
        Most slots a class can use (default: its object count; OFDS passes the number of
        distinct images holding the class). A class with cap 0 gets 0.

    Returns
    -------
    ndarray of shape (C,), int64
        Parts summing to exactly ``min(budget, sum of the caps of the classes with objects)``,
        each at most its cap.

    Notes
    -----
    *Enough budget* (``budget >= A``, the number of classes with objects and a cap): every such
    class gets at least 1. The real shares are ``x_c = clip(lam * w_c, 1, cap_c)`` with ``lam``
    set so that they sum to the total (water-filling: what a capped class cannot take goes to
    the others, in proportion to their weights); each class gets ``floor(x_c)`` and the units
    left go one each by largest remainder. Remainder ties (compared rounded to 1e-9, so float
    noise does not decide) go to the class with fewer objects, then to the lower class index:
    the rarer class wins, as everywhere in OFDS.

    *Budget below the number of classes* (``budget < A``): the ``budget`` classes with the
    *fewest* objects get 1 each (ties: lower index), the others 0. A frequent class appears in
    many images, usually next to other classes, so the images picked for rare classes bring
    frequent objects along; the reverse does not hold. Protecting the rare classes is the point
    of OFDS, so they are served first.
    """
    if mode not in ALLOCATIONS:
        raise ConfigError(f"The allocation mode must be one of {', '.join(ALLOCATIONS)}; got {mode!r}.")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ConfigError(f"The budget must be a non-negative integer; got {budget!r}.")
    counts = _count_array(counts, "counts")
    caps = counts if caps is None else _count_array(caps, "caps")
    if caps.shape != counts.shape:
        raise ConfigError(f"caps needs one entry per class ({counts.size}); got {caps.size}.")
    out = np.zeros(counts.size, np.int64)
    act = np.flatnonzero((counts > 0) & (caps > 0))
    total = int(min(int(budget), int(caps[act].sum())))
    if total == 0:
        return out
    if total < act.size:
        rare_first = act[np.lexsort((act, counts[act]))]
        out[rare_first[:total]] = 1
        return out
    c = counts[act].astype(np.float64)
    w = {"uniform": np.ones_like(c), "sqrt": np.sqrt(c), "proportional": c}[mode]
    lo, hi = np.ones_like(c), caps[act].astype(np.float64)
    x = _water_fill(w, lo, hi, total)
    part = np.clip(np.floor(x), lo, hi).astype(np.int64)
    frac = np.round(x - part, _FRAC_DIGITS)
    order = np.lexsort((act, counts[act], -frac))  # largest remainder, then rarer, then lower index
    left = total - int(part.sum())
    while left > 0:  # one pass suffices in exact arithmetic; the loop absorbs float noise
        for j in order:
            if left and part[j] < hi[j]:
                part[j] += 1
                left -= 1
    out[act] = part
    return out


# -- clustering ------------------------------------------------------------------------------------


def _sq_norms(A: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", A, A)


def _sq_dist_to_centres(X: np.ndarray, C: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Squared distance of each row of ``X`` to its own centre ``C[labels]`` (float64)."""
    out = np.empty(X.shape[0], np.float64)
    for s in range(0, X.shape[0], _CHUNK):
        diff = X[s : s + _CHUNK].astype(np.float64) - C[labels[s : s + _CHUNK]]
        out[s : s + _CHUNK] = np.einsum("ij,ij->i", diff, diff)
    return out


def _nearest_centre(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Index of the nearest row of ``C`` for every row of ``X`` (float32 GEMM in blocks)."""
    qC = _sq_norms(C)
    out = np.empty(X.shape[0], np.int64)
    step = max(256, (1 << 22) // max(1, C.shape[0]))
    for s in range(0, X.shape[0], step):
        G = X[s : s + step] @ C.T
        G *= np.float32(-2.0)
        G += qC
        out[s : s + step] = G.argmin(axis=1)
    return out


def _kmeans_pp(S: np.ndarray, qS: np.ndarray, C: np.ndarray, add: int, k: int,
               rng: np.random.Generator) -> np.ndarray:
    """Extend the centres ``C`` by ``add`` rows of ``S``: greedy k-means++ seeding.

    D^2 sampling (Arthur & Vassilvitskii, 2007) with ``2 + ln k`` candidates per step, the one
    lowering the potential most kept (scikit-learn's greedy variant), in float32 BLAS. Starting
    from existing centres it continues the seeding (used when a class gets more clusters).
    """
    m = S.shape[0]
    trials = 2 + int(np.log(max(k, 2)))
    chosen: list[int] = []
    if C.shape[0] == 0:
        first = int(rng.integers(m))
        chosen.append(first)
        mind = np.maximum(qS + qS[first] - np.float32(2.0) * (S @ S[first]), np.float32(0.0))
        add -= 1
    else:
        mind = np.full(m, np.inf, np.float32)
        qC = _sq_norms(C)
        step = max(256, (1 << 22) // max(1, C.shape[0]))
        for s in range(0, m, step):
            G = S[s : s + step] @ C.T
            G *= np.float32(-2.0)
            G += qC
            mind[s : s + step] = G.min(axis=1) + qS[s : s + step]
        np.maximum(mind, np.float32(0.0), out=mind)
    for _ in range(add):
        cum = np.cumsum(mind, dtype=np.float64)
        if cum[-1] > 0:
            cand = np.searchsorted(cum, rng.random(trials) * cum[-1], side="right")
            cand = np.minimum(cand, m - 1)
        else:  # every row sits on a centre: any row will do
            cand = rng.integers(m, size=1)
        D = S @ S[cand].T
        D *= np.float32(-2.0)
        D += qS[:, None]
        D += qS[cand][None, :]
        np.maximum(D, np.float32(0.0), out=D)
        np.minimum(D, mind[:, None], out=D)
        best = int(np.argmin(D.sum(axis=0, dtype=np.float64)))
        mind = np.ascontiguousarray(D[:, best])
        chosen.append(int(cand[best]))
    return np.concatenate([C, S[chosen]]).astype(np.float32)


class _ClassClusters:
    """k-means of one class's rows, re-run with more clusters as the selection grows.

    The first fit seeds ``n_init`` times (greedy k-means++) and runs Lloyd's algorithm
    (:class:`sklearn.cluster.KMeans`) from each, keeping the lowest inertia; a fit with more
    clusters continues the seeding from the previous centroids and runs Lloyd from there
    (warm start: cheap, and most representatives survive). Classes with more than
    ``fit_size`` rows are fitted on a seeded subsample of ``max(fit_size, 4 k)`` rows, then
    every row is assigned to its nearest centroid.
    """

    def __init__(self, X: np.ndarray, seed: int, *, n_init: int, max_iter: int, fit_size: int) -> None:
        self.X, self.n = X, int(X.shape[0])
        self.rng = np.random.default_rng(seed)
        self.n_init, self.max_iter, self.fit_size = n_init, max_iter, fit_size
        self.C: np.ndarray | None = None
        self.sample = np.empty(0, np.int64)

    def _fit(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Centroids (k, d) and the label of every row."""
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        X, n = self.X, self.n
        if k == 1:
            return X.astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32), np.zeros(n, np.int64)
        m = min(n, max(self.fit_size, 4 * k))
        if self.sample.size < m:
            self.sample = np.arange(n) if m == n else np.sort(self.rng.choice(n, m, replace=False))
        S = X if m == n else np.ascontiguousarray(X[self.sample])
        qS = _sq_norms(S)
        prev = self.C if self.C is not None and self.C.shape[0] < k else None
        best = None
        for _ in range(1 if prev is not None else self.n_init):
            C0 = prev if prev is not None else np.empty((0, X.shape[1]), np.float32)
            C0 = _kmeans_pp(S, qS, C0, k - C0.shape[0], k, self.rng)
            km = KMeans(n_clusters=k, init=C0, n_init=1, max_iter=self.max_iter, algorithm="lloyd")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct rows than k
                km.fit(S)
            if best is None or km.inertia_ < best.inertia_:
                best = km
        C = np.ascontiguousarray(best.cluster_centers_, dtype=np.float32)
        labels = np.asarray(best.labels_, np.int64) if m == n else _nearest_centre(X, C)
        return C, labels

    def representatives(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """See :func:`class_representatives`."""
        n = self.n
        if k >= n:
            return np.arange(n, dtype=np.int64), np.ones(n, np.int64)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):  # many small GEMMs: threads only contend
            C, labels = self._fit(k)
        self.C = C
        d2 = _sq_dist_to_centres(self.X, C.astype(np.float64), labels)
        order = np.lexsort((np.arange(n), d2, labels))  # by cluster, then distance, then row
        lab = labels[order]
        first = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
        rows, sizes = order[first], np.bincount(labels, minlength=C.shape[0])[lab[first]]
        rank = np.lexsort((rows, -sizes))
        return rows[rank].astype(np.int64), sizes[rank].astype(np.int64)


def class_representatives(
    X: np.ndarray,
    k: int,
    *,
    seed: int,
    n_init: int = 1,
    max_iter: int = 50,
    fit_size: int = 20000,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the rows ``X`` into ``k`` groups; return one representative row per cluster.

    Parameters
    ----------
    X : ndarray of shape (n, d), float32
        One class's (normalised) object features.
    k : int
        Clusters, ``k >= 1``; ``k >= n`` makes every row its own cluster (no k-means), ``k = 1``
        has the mean as its centroid.
    seed : int
        Seeds the k-means++ seeding and the subsample.
    n_init : int
        Independent seedings, each followed by Lloyd's algorithm; the lowest inertia is kept.
    max_iter : int
        Lloyd iterations at most.
    fit_size : int
        Rows above which k-means is fitted on a seeded subsample of ``max(fit_size, 4 k)``
        rows; every row is then assigned to its nearest centroid.

    Returns
    -------
    rows : ndarray of shape (r,), int64
        For each non-empty cluster, its member nearest the centroid (ties: lowest row), ordered
        by cluster size, largest first (ties: lowest row). ``r <= k``.
    sizes : ndarray of shape (r,), int64
        The clusters' sizes.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    return _ClassClusters(X, seed, n_init=n_init, max_iter=max_iter, fit_size=fit_size).representatives(int(k))


def _distinct_in_order(a: np.ndarray) -> np.ndarray:
    """``a`` without repeats, each value at its first occurrence."""
    if a.size == 0:
        return a
    _, first = np.unique(a, return_index=True)
    return a[np.sort(first)]


# -- trimming and order ----------------------------------------------------------------------------


def _owners(reps: Sequence[np.ndarray]) -> dict[int, list[int]]:
    owners: dict[int, list[int]] = {}
    for c, images in enumerate(reps):
        for x in np.asarray(images).tolist():
            owners.setdefault(x, []).append(c)
    return owners


def _rarity_rank(counts: np.ndarray) -> np.ndarray:
    """Rank of each class from rarest (0): fewer objects first, ties lower class index."""
    order = np.lexsort((np.arange(counts.size), counts))
    rank = np.empty(counts.size, np.int64)
    rank[order] = np.arange(counts.size)
    return rank


def trim_union(reps: Sequence[np.ndarray], counts, quotas, budget: int) -> np.ndarray:
    """Cut the union of the classes' images down to ``budget``, most frequent classes first.

    Parameters
    ----------
    reps : sequence of C 1-D int arrays
        ``reps[c]``: the distinct images class ``c`` brings, best first (they *belong* to ``c``;
        an image may belong to several classes).
    counts : array_like of shape (C,), int
        Objects per class: the frequency order (most objects first, ties higher class index
        first: the reverse of the rarity order of :func:`interleave`).
    quotas : array_like of shape (C,), int
        What each class is protected down to in the first stage.
    budget : int

    Returns
    -------
    ndarray of int64
        The kept images, ascending; ``min(budget, |union|)`` of them.

    Notes
    -----
    ``h_c`` is the number of kept images belonging to ``c``. Removing an image lowers ``h`` of
    every class it belongs to. Three stages, each run until the union fits:

    1. floor = the quotas: classes are visited from the most frequent; each gives up its
       worst-ranked images while ``h_c`` exceeds its quota, skipping any image whose removal
       would bring some class it belongs to below that class's quota;
    2. the same with a floor of 1 for every class (no class loses its last image). When
       ``budget >=`` the number of classes this stage always reaches the budget: were it stuck,
       every kept image would be the last one of some class, so there would be at most as many
       images as classes;
    3. (only when ``budget <`` the number of classes) floor 0, an image being removable when
       every class it belongs to is at least as frequent as the class giving it up: the most
       frequent classes lose their last image first.

    An image that is the only representative of a rarer class is thus never removed for a more
    frequent one. Holdings only go down, so an image skipped once stays skipped in its stage,
    and each stage is a single backward sweep per class.
    """
    counts = _count_array(counts, "counts")
    quotas = _count_array(quotas, "quotas")
    reps = [np.asarray(r, dtype=np.int64) for r in reps]
    if not (len(reps) == counts.size == quotas.size):
        raise ConfigError(f"reps, counts and quotas need one entry per class; got {len(reps)}, "
                          f"{counts.size}, {quotas.size}.")
    owners = _owners(reps)
    kept = set(owners)
    h = np.array([r.size for r in reps], np.int64)
    rank = _rarity_rank(counts)
    frequent_first = np.argsort(-rank, kind="stable")
    ones = np.ones_like(quotas)
    for stage, floor in enumerate((quotas, ones, np.zeros_like(quotas))):
        for c in frequent_first:
            if len(kept) <= budget:
                break
            for x in reps[c][::-1].tolist():
                if len(kept) <= budget or h[c] <= floor[c]:
                    break
                if x not in kept:
                    continue
                own = owners[x]
                if stage < 2:
                    if any(h[o] - 1 < floor[o] for o in own):
                        continue
                elif any(rank[o] < rank[c] for o in own):
                    continue
                kept.discard(x)
                for o in own:
                    h[o] -= 1
    return np.array(sorted(kept), dtype=np.int64)


def interleave(reps: Sequence[np.ndarray], counts, kept) -> tuple[np.ndarray, np.ndarray]:
    """Order the kept images so that classes take turns, rarest first.

    Each kept image is credited to the rarest class it belongs to (fewest objects, ties lower
    index). Turn ``t`` gives, for each class from the rarest, its ``t``-th credited image in
    its own order (``reps[c]``), skipping classes with none left.

    Returns
    -------
    images : ndarray of int64
        The kept images that belong to some class, in pick order.
    turns : ndarray of int64
        The turn (0-based rank within its class) of each.
    """
    counts = _count_array(counts, "counts")
    rank = _rarity_rank(counts)
    keep = set(np.asarray(kept, dtype=np.int64).tolist())
    credit: dict[int, int] = {}
    for c, images in enumerate(reps):
        for x in np.asarray(images).tolist():
            if x in keep and (x not in credit or rank[c] < rank[credit[x]]):
                credit[x] = c
    lists: list[list[int]] = [[] for _ in reps]
    for c, images in enumerate(reps):
        lists[c] = [x for x in np.asarray(images).tolist() if credit.get(x) == c]
    rare_first = np.argsort(rank, kind="stable")
    out, turns = [], []
    for t in range(max((len(v) for v in lists), default=0)):
        for c in rare_first:
            if t < len(lists[c]):
                out.append(lists[c][t])
                turns.append(t)
    return np.array(out, dtype=np.int64), np.array(turns, dtype=np.int64)


# -- the selection ---------------------------------------------------------------------------------


def _positions(a, n: int | None, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.size == 0:
        return np.empty(0, np.int64)
    if arr.ndim != 1 or arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"{name} must be a 1-D array of integer pool positions; got dtype "
                          f"{arr.dtype}, shape {arr.shape}. For a mask pass np.flatnonzero(mask).")
    if arr.min() < 0 or (n is not None and arr.max() >= n):
        raise ConfigError(f"{name} positions must lie in [0, {n}); got {int(arr.min())}..{int(arr.max())}.")
    return np.unique(arr).astype(np.int64)


def ofds_select(
    objects: ObjectSet,
    budget: int,
    *,
    candidates=None,
    n_samples: int | None = None,
    allocation: Allocation = "sqrt",
    rng: np.random.Generator | int | None = None,
    min_score: float = 0.0,
    n_init: int = 1,
    max_iter: int = 50,
    max_rounds: int = 8,
    fit_size: int = 20000,
) -> tuple[np.ndarray, np.ndarray]:
    """Select ``budget`` images through their objects (OFDS); see the module docstring.

    Parameters
    ----------
    objects : ObjectSet
        The proposals of the pool.
    budget : int
        Images to select, ``0 <= budget <= #candidates``.
    candidates : array_like of int, optional
        Image positions that may be selected. Default: ``range(n_samples)``, or the images
        holding objects when ``n_samples`` is None.
    n_samples : int, optional
        Pool size; object positions are checked against it.
    allocation : {"uniform", "sqrt", "proportional"}
        Split of the budget across classes (:func:`allocate`).
    rng : numpy.random.Generator or int, optional
        Source of every random choice (one 32-bit draw, from which each class's k-means seed
        and the fill are derived); an int is a seed. Default: seed 0.
    min_score : float
        Objects with a lower score are ignored.
    n_init, max_iter, fit_size
        k-means settings (:func:`class_representatives`).
    max_rounds : int
        Clustering rounds before the last one, in which every object is its own cluster.

    Returns
    -------
    positions : ndarray of shape (budget,), int64
        Selected images in pick order: classes taking turns (rarest first), then the fill.
    scores : ndarray of shape (budget,), float64
        ``1 / (1 + t)`` for an image given at turn ``t`` of its class (its rank, by cluster
        size, among the images credited to that class; 1 for each class's first image), ``0``
        for fill images (no kept proposal). Non-increasing along the pick order.

    Raises
    ------
    ConfigError
        Bad parameters or positions.
    EmptyPoolError
        ``budget >= 1`` and no candidate.
    PoolExhaustedError
        ``budget`` exceeds the number of candidates.
    """
    t0 = time.perf_counter()
    if not isinstance(objects, ObjectSet):
        raise ConfigError(f"objects must be an alloop.strategies.ofds.ObjectSet; got {type(objects).__name__}. "
                          "Build one from the detector's proposals and the crops' features.")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ConfigError(f"The budget must be a non-negative integer; got {budget!r}.")
    if allocation not in ALLOCATIONS:
        raise ConfigError(f"allocation must be one of {', '.join(ALLOCATIONS)}; got {allocation!r}.")
    for name, v, lo in (("n_init", n_init, 1), ("max_iter", max_iter, 1), ("max_rounds", max_rounds, 1),
                        ("fit_size", fit_size, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}; got {v!r}.")
    if not math.isfinite(float(min_score)):
        raise ConfigError(f"min_score must be a finite number; got {min_score!r}.")
    if n_samples is not None:
        objects.check_positions(int(n_samples))
    if candidates is not None:
        cand = _positions(candidates, n_samples, "candidates")
    elif n_samples is not None:
        cand = np.arange(int(n_samples), dtype=np.int64)
    else:
        cand = np.unique(objects.image)
    budget = int(budget)
    if budget and cand.size == 0:
        raise EmptyPoolError("OFDS has no candidate images to select from.")
    if budget > cand.size:
        raise PoolExhaustedError(budget, int(cand.size), f"Lower the budget to at most {cand.size}.")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(0 if rng is None else rng)
    base = int(rng.integers(0, 2**32, dtype=np.uint64))
    if budget == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)

    # objects that count: in a candidate image, confident enough; grouped by class
    keep = np.isin(objects.image, cand) & (objects.score >= np.float32(min_score))
    idx = np.flatnonzero(keep)
    labels_all = objects.label[idx]
    by_class = idx[np.argsort(labels_all, kind="stable")]
    classes, starts, n_c = np.unique(objects.label[by_class], return_index=True, return_counts=True)
    C = classes.size
    images = objects.image[by_class]
    X = objects.features[by_class]  # a float32 copy, normalised in place
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    np.divide(X, norms, out=X, where=norms > 0)
    slices = [slice(int(s), int(s + m)) for s, m in zip(starts, n_c)]
    m_c = np.array([np.unique(images[sl]).size for sl in slices], np.int64)

    quotas = allocate(budget, n_c, allocation, caps=m_c)
    k = np.minimum(quotas, n_c)
    reps: list[np.ndarray] = [np.empty(0, np.int64) for _ in range(C)]
    clusters = [_ClassClusters(X[sl], derive_seed(base, "ofds-kmeans", int(classes[c])), n_init=n_init,
                               max_iter=max_iter, fit_size=fit_size) for c, sl in enumerate(slices)]
    changed = np.flatnonzero(k > 0)
    prev_union = prev_k = 0
    rounds = 0
    union = np.empty(0, np.int64)
    while True:
        rounds += 1
        for c in changed.tolist():
            rows, _ = clusters[c].representatives(int(k[c]))
            reps[c] = _distinct_in_order(images[slices[c]][rows])
        union = np.unique(np.concatenate(reps)) if C else np.empty(0, np.int64)
        grow = n_c > k
        if union.size >= budget or not grow.any():
            break
        if rounds >= max_rounds:
            new_k = n_c.copy()  # last round: every object is its own cluster
        else:
            yield_ = (union.size - prev_union) / max(int(k.sum()) - prev_k, 1)
            yield_ = min(1.0, max(0.125, yield_))
            want = math.ceil((budget - union.size) / yield_)
            new_k = k + allocate(want, np.where(grow, n_c, 0), allocation, caps=n_c - k)
        changed = np.flatnonzero(new_k != k)
        prev_union, prev_k, k = int(union.size), int(k.sum()), new_k

    n_union = int(union.size)
    kept = trim_union(reps, n_c, quotas, budget) if union.size > budget else union
    picks, turns = interleave(reps, n_c, kept)
    scores = 1.0 / (1.0 + turns.astype(np.float64))
    need = budget - picks.size
    if need:
        rest = np.setdiff1d(cand, picks, assume_unique=True)
        fill = derive_rng(base, "ofds-fill").permutation(rest)[:need]
        picks = np.concatenate([picks, fill.astype(np.int64)])
        scores = np.concatenate([scores, np.zeros(need)])
    logger.info(
        "ofds: %d images from %d objects of %d classes in %d candidates (%d clustering rounds, "
        "union %d, %d filled) in %.2fs",
        budget, idx.size, C, cand.size, rounds, n_union, need, time.perf_counter() - t0,
    )
    return picks, scores


class OfdsStrategy(Strategy):
    """Object-focused data selection (OFDS): pick images whose objects cover every class.

    For detection and segmentation. Per predicted class, k-means over the objects' features;
    the object nearest each centroid brings its image; cluster counts grow until the images
    fill the batch, the excess is trimmed from the most frequent classes, and rare classes keep
    their share. See :mod:`alloop.strategies.ofds` and :func:`ofds_select`.

    Parameters
    ----------
    allocation : {"uniform", "sqrt", "proportional"}, default "sqrt"
        Split of the batch across classes by object count (:func:`allocate`): equal, ∝ sqrt,
        ∝ count. Every class with proposals gets an image when the batch has room.
    min_score : float, default 0.0
        Proposals with a lower detector confidence are ignored.
    n_init : int, default 1
        Independent k-means++ seedings (each refined by Lloyd, the lowest inertia kept) of a
        class's first clustering; later rounds warm-start from its centroids.
    max_iter : int, default 50
        Lloyd iterations at most.
    max_rounds : int, default 8
        Clustering rounds before every object becomes its own cluster.
    fit_size : int, default 20000
        Objects of a class above which k-means is fitted on a subsample (every object is then
        assigned to its nearest centroid).

    Notes
    -----
    Needs ``objects``: an :class:`ObjectSet` in ``ctx.extras["objects"]`` (image positions
    into the pool). Scores are ``1 / (1 + t)`` for an image given at its class's turn ``t``
    (1 for each class's first image), 0 for images added to fill the batch when the proposals
    cover too few candidate images.
    """

    name: ClassVar[str] = "ofds"
    requires: ClassVar[frozenset[str]] = frozenset({"objects"})

    allocation: Allocation = "sqrt"
    min_score: float = Field(default=0.0, allow_inf_nan=False)
    n_init: int = Field(default=1, ge=1)
    max_iter: int = Field(default=50, ge=1)
    max_rounds: int = Field(default=8, ge=1)
    fit_size: int = Field(default=20000, ge=1)

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        objects = ctx.require("objects")
        if not isinstance(objects, ObjectSet):
            raise ConfigError(
                "The ofds strategy needs ctx.extras['objects'] to be an alloop.strategies.ofds.ObjectSet; "
                f"got {type(objects).__name__}. Wrap the proposals with ObjectSet(image=..., label=..., "
                "score=..., features=...)."
            )
        positions, scores = ofds_select(
            objects, k, candidates=ctx.candidates, n_samples=ctx.n_samples,
            allocation=self.allocation, rng=ctx.rng, min_score=self.min_score, n_init=self.n_init,
            max_iter=self.max_iter, max_rounds=self.max_rounds, fit_size=self.fit_size,
        )
        return Selection(positions=positions, scores=scores)
