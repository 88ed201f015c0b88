"""Pure numpy scoring kernels for uncertainty sampling, and a deterministic top-k.

Every score follows the same convention: **higher = more informative**. The kernels validate
their input once (shape, finiteness, non-negativity) and compute in float64.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alloop.checks import check_int, check_proba
from alloop.errors import InvalidInputError, PoolExhaustedError

__all__ = ["entropy", "least_confidence", "margin", "top_k"]


def entropy(proba: ArrayLike) -> NDArray[np.float64]:
    """Shannon entropy of each row, in nats, with ``0 log 0 = 0``.

    Parameters
    ----------
    proba : array_like of shape (n_samples, n_classes)
        Class probabilities; rows non-negative (normally summing to 1).

    Returns
    -------
    ndarray of shape (n_samples,), float64
        ``-sum_c p_c log p_c``; higher = more uncertain.
    """
    p = check_proba(proba)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    h: NDArray[np.float64] = -terms.sum(axis=1)
    return h


def margin(proba: ArrayLike) -> NDArray[np.float64]:
    """Margin informativeness ``1 - (p_top1 - p_top2)`` of each row.

    Parameters
    ----------
    proba : array_like of shape (n_samples, n_classes)
        Class probabilities. With a single class, ``p_top2`` is taken as 0.

    Returns
    -------
    ndarray of shape (n_samples,), float64
        Higher = the two most likely classes are closer = more informative.
    """
    p = check_proba(proba)
    if p.shape[1] == 1:
        return 1.0 - p[:, 0]
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def least_confidence(proba: ArrayLike) -> NDArray[np.float64]:
    """Least-confidence informativeness ``1 - max_c p_c`` of each row.

    Parameters
    ----------
    proba : array_like of shape (n_samples, n_classes)
        Class probabilities.

    Returns
    -------
    ndarray of shape (n_samples,), float64
        Higher = the model is less sure of its top class.
    """
    p = check_proba(proba)
    top: NDArray[np.float64] = p.max(axis=1)
    return 1.0 - top


def top_k(scores: ArrayLike, k: int) -> NDArray[np.int64]:
    """Positions of the ``k`` largest scores, largest first, ties to the lowest position.

    Runs in ``O(n + k log k)``: a partition finds the k-th largest value, then only the
    selected positions are sorted (stable, so equal scores keep ascending positions).

    Parameters
    ----------
    scores : array_like of shape (n,)
        Finite scores; higher = more informative.
    k : int
        Number of positions to return, ``0 <= k <= n``.

    Returns
    -------
    ndarray of shape (k,), int64
        Positions into ``scores`` ordered by descending score, then ascending position.

    Raises
    ------
    InvalidInputError
        If ``scores`` is not 1-D and finite, or ``k`` is not a non-negative integer.
    PoolExhaustedError
        If ``k > n``.
    """
    s = np.asarray(scores)
    if s.ndim != 1:
        raise InvalidInputError(f"scores must be a 1-D array of shape (n,); got shape {s.shape}.")
    s = np.asarray(s, dtype=np.float64)
    if not np.isfinite(s).all():
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise InvalidInputError(f"scores must be finite; position {bad} is {s[bad]!r}.")
    n, k = s.size, check_int("k", k, 0)
    if k > n:
        raise PoolExhaustedError(k, n)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    neg = -s
    if k < n:
        kth = np.partition(neg, k - 1)[k - 1]  # the k-th smallest of -s = k-th largest of s
        above = np.flatnonzero(neg < kth)
        at = np.flatnonzero(neg == kth)[: k - above.size]
        idx = np.concatenate([above, at])
        idx.sort()
    else:
        idx = np.arange(n)
    order = np.argsort(neg[idx], kind="stable")
    return idx[order].astype(np.int64, copy=False)
