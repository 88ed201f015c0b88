"""How OFDS fits its images to the budget and orders them: :func:`trim_union`, :func:`interleave`.

Each class brings a ranked list of images (its cluster representatives). When their union
exceeds the budget, :func:`trim_union` removes images from the most frequent classes first,
never an image a rarer class needs; :func:`interleave` then orders the kept images so that the
classes take turns, rarest first, and any prefix of the selection is balanced across classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alloop.checks import check_int
from alloop.errors import InvalidInputError
from alloop.strategies._allocation import check_counts

__all__ = ["interleave", "trim_union"]


def _owners(reps: Sequence[NDArray[Any]]) -> dict[int, list[int]]:
    owners: dict[int, list[int]] = {}
    for c, images in enumerate(reps):
        for x in np.asarray(images).tolist():
            owners.setdefault(x, []).append(c)
    return owners


def _rarity_rank(counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Rank of each class from rarest (0): fewer objects first, ties lower class index."""
    order = np.lexsort((np.arange(counts.size), counts))
    rank = np.empty(counts.size, np.int64)
    rank[order] = np.arange(counts.size)
    return rank


def trim_union(
    reps: Sequence[NDArray[Any]], counts: ArrayLike, quotas: ArrayLike, budget: int
) -> NDArray[np.int64]:
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
    counts = check_counts(counts, "counts")
    quotas = check_counts(quotas, "quotas")
    budget = check_int("budget", budget, 0)
    reps = [np.asarray(r, dtype=np.int64) for r in reps]
    if not (len(reps) == counts.size == quotas.size):
        raise InvalidInputError(f"reps, counts and quotas need one entry per class; got {len(reps)}, "
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


def interleave(
    reps: Sequence[NDArray[Any]], counts: ArrayLike, kept: ArrayLike
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
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
    counts = check_counts(counts, "counts")
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
