"""Pure numpy scoring kernels for uncertainty sampling, and a deterministic top-k.

Every score follows the same convention: **higher = more informative**. The kernels validate
their input once (shape, finiteness, non-negativity) and compute in float64.
"""

from __future__ import annotations

import numpy as np

from alloop.errors import ConfigError, PoolExhaustedError

__all__ = ["entropy", "margin", "least_confidence", "top_k"]


def _check_proba(proba: np.ndarray) -> np.ndarray:
    """Return ``proba`` as a float64 2-D array, or raise :class:`ConfigError`."""
    p = np.asarray(proba)
    if p.ndim != 2:
        raise ConfigError(
            f"proba must be a 2-D array of shape (n_samples, n_classes); got shape {p.shape}. "
            "Pass one row of class probabilities per sample."
        )
    if p.shape[1] == 0:
        raise ConfigError(f"proba must have at least one class column; got shape {p.shape}.")
    if not np.issubdtype(p.dtype, np.number) or np.issubdtype(p.dtype, np.complexfloating):
        raise ConfigError(f"proba must hold real numbers; got dtype {p.dtype}.")
    p = np.asarray(p, dtype=np.float64)
    if not np.isfinite(p).all():
        bad = int(np.argwhere(~np.isfinite(p))[0, 0])
        raise ConfigError(
            f"proba must be finite; row {bad} contains NaN or inf. Check the model's outputs."
        )
    if (p < 0).any():
        bad = int(np.argwhere(p < 0)[0, 0])
        raise ConfigError(
            f"proba must be non-negative (class probabilities); row {bad} has a negative entry "
            f"{p[bad].min()!r}. Apply a softmax to logits before scoring."
        )
    return p


def entropy(proba: np.ndarray) -> np.ndarray:
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
    p = _check_proba(proba)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=1)


def margin(proba: np.ndarray) -> np.ndarray:
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
    p = _check_proba(proba)
    if p.shape[1] == 1:
        return 1.0 - p[:, 0]
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def least_confidence(proba: np.ndarray) -> np.ndarray:
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
    p = _check_proba(proba)
    return 1.0 - p.max(axis=1)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
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
    ConfigError
        If ``scores`` is not 1-D and finite, or ``k`` is not a non-negative integer.
    PoolExhaustedError
        If ``k > n``.
    """
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ConfigError(f"scores must be a 1-D array of shape (n,); got shape {s.shape}.")
    s = np.asarray(s, dtype=np.float64)
    if not np.isfinite(s).all():
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ConfigError(f"scores must be finite; position {bad} is {s[bad]!r}.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ConfigError(f"k must be a non-negative integer; got {k!r}.")
    n, k = s.size, int(k)
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
