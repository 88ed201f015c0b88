"""Argument checks for the array kernels, with one error type and one wording.

Kernels (scoring, selection, graphs) validate what they are handed and raise
:class:`~alloop.errors.InvalidInputError`: a bad array reaching a kernel comes from a model, an
encoder or a caller's code, not from the project file, so the loop counts it as a failed
attempt of the step (retried, then FAILED) rather than as a user's configuration mistake.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alloop.errors import InvalidInputError

__all__ = ["check_choice", "check_int", "check_matrix", "check_number", "check_positions", "check_proba"]


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int, if it is an integer (not a bool) within ``[low, high]``."""
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer))
    if ok and ((low is not None and value < low) or (high is not None and value > high)):
        ok = False
    if not ok:
        bounds = (f" >= {low}" if low is not None else "") + (
            f"{' and' if low is not None else ''} <= {high}" if high is not None else "")
        raise InvalidInputError(f"{name} must be an integer{bounds}; got {value!r}.")
    return int(value)


def check_number(name: str, value: Any, low: float | None = None) -> float:
    """``value`` as a finite float (``>= low`` when given)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a finite number; got {value!r}.") from None
    if isinstance(value, bool) or not math.isfinite(v) or (low is not None and v < low):
        raise InvalidInputError(f"{name} must be a finite number{f' >= {low}' if low is not None else ''}; "
                                f"got {value!r}.")
    return v


def check_choice(name: str, value: Any, choices: Collection[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise InvalidInputError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return str(value)


def check_positions(a: Any, n: int | None, name: str, *, what: str = "row positions") -> NDArray[np.int64]:
    """A 1-D array of integer positions into ``range(n)``, returned sorted, unique, int64.

    ``None`` or an empty array gives an empty array; ``n=None`` checks the lower bound only.
    """
    arr = np.asarray([] if a is None else a)
    if arr.size == 0:
        return np.empty(0, np.int64)
    if arr.ndim != 1 or arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(
            f"{name} must be a 1-D array of integer {what}; got dtype {arr.dtype} and shape {arr.shape}. "
            "For a boolean mask pass np.flatnonzero(mask)."
        )
    if arr.min() < 0 or (n is not None and arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= (n if n is not None else np.iinfo(np.int64).max))][0]
        raise InvalidInputError(f"{name} positions must lie in [0, {n}) ({n} rows); got {bad}.")
    return np.unique(arr).astype(np.int64, copy=False)


def check_matrix(X: Any, name: str = "X", *, min_rows: int = 0, finite: bool = True,
                 hint: str = "") -> NDArray[Any]:
    """A real 2-D array with at least one column and ``min_rows`` rows (finite when asked)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] == 0 or X.shape[0] < min_rows:
        rows = f" with at least {min_rows} row{'s' if min_rows != 1 else ''} and" if min_rows else " with"
        raise InvalidInputError(
            f"{name} must be a 2-D array of shape (n_samples, n_features){rows} n_features >= 1; "
            f"got shape {X.shape}."
        )
    if X.dtype == bool or not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise InvalidInputError(f"{name} must hold real numbers; got dtype {X.dtype}.")
    if finite:
        step = max(1, (1 << 22) // X.shape[1])  # a block at a time: no pool-sized boolean temporary
        for start in range(0, X.shape[0], step):
            block = X[start : start + step]
            if not np.isfinite(block).all():
                bad = start + int(np.argwhere(~np.isfinite(block))[0, 0])
                raise InvalidInputError(
                    f"{name} must be finite; row {bad} contains NaN or inf.{' ' + hint if hint else ''}")
    return X


def check_proba(proba: Any, name: str = "proba") -> NDArray[np.float64]:
    """Class probabilities as a float64 (n_samples, n_classes) array: finite, non-negative."""
    p = np.asarray(proba)
    if p.ndim != 2:
        raise InvalidInputError(
            f"{name} must be a 2-D array of shape (n_samples, n_classes); got shape {p.shape}. "
            "Pass one row of class probabilities per sample."
        )
    if p.shape[1] == 0:
        raise InvalidInputError(f"{name} must have at least one class column; got shape {p.shape}.")
    if not np.issubdtype(p.dtype, np.number) or np.issubdtype(p.dtype, np.complexfloating):
        raise InvalidInputError(f"{name} must hold real numbers; got dtype {p.dtype}.")
    p = np.asarray(p, dtype=np.float64)
    if not np.isfinite(p).all():
        bad = int(np.argwhere(~np.isfinite(p))[0, 0])
        raise InvalidInputError(f"{name} must be finite; row {bad} contains NaN or inf. Check the model's outputs.")
    if (p < 0).any():
        bad = int(np.argwhere(p < 0)[0, 0])
        raise InvalidInputError(
            f"{name} must be non-negative (class probabilities); row {bad} has a negative entry "
            f"{p[bad].min()!r}. Apply a softmax to logits before scoring."
        )
    return p
