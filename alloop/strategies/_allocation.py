"""How OFDS shares its budget across classes: :func:`allocate` (the class quotas).

Every class with objects gets at least one image when the budget allows, the rest is split by
``uniform``, ``sqrt(count)`` or ``count`` weights with water-filling under each class's cap;
with fewer slots than classes the rarest classes are served first. Used by
:func:`alloop.strategies.ofds.ofds_select`, first for the quotas and then to grow the cluster
counts.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alloop.checks import check_choice, check_int
from alloop.errors import InvalidInputError

__all__ = ["ALLOCATIONS", "Allocation", "allocate", "check_counts"]

ALLOCATIONS = ("uniform", "sqrt", "proportional")
Allocation = Literal["uniform", "sqrt", "proportional"]
_FRAC_DIGITS = 9  # fractional parts are compared rounded, so float noise cannot break ties


def check_counts(a: ArrayLike, name: str) -> NDArray[np.int64]:
    """``a`` as a 1-D int64 array of non-negative integers (one per class)."""
    arr = np.asarray(a)
    if arr.ndim != 1 or (arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer))):
        raise InvalidInputError(
            f"{name} must be a 1-D array of integers; got dtype {arr.dtype}, shape {arr.shape}."
        )
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise InvalidInputError(
            f"{name} must be non-negative; got {int(arr.min())} at class {int(arr.argmin())}."
        )
    return arr


def _water_fill(
    w: NDArray[np.float64], lo: NDArray[np.float64], hi: NDArray[np.float64], total: int
) -> NDArray[np.float64]:
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
    shares: NDArray[np.float64] = np.clip(lam * w, lo, hi)
    return shares


def allocate(
    budget: int, counts: ArrayLike, mode: Allocation = "sqrt", *, caps: ArrayLike | None = None
) -> NDArray[np.int64]:
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

    Raises
    ------
    InvalidInputError
        An unknown mode, a negative or non-integer budget, counts or caps that are not 1-D
        non-negative integers, caps of another length than counts.

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
    check_choice("The allocation mode", mode, ALLOCATIONS)
    check_int("The budget", budget, 0)
    counts = check_counts(counts, "counts")
    caps = counts if caps is None else check_counts(caps, "caps")
    if caps.shape != counts.shape:
        raise InvalidInputError(f"caps needs one entry per class ({counts.size}); got {caps.size}.")
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
