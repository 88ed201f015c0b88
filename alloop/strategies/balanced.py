"""``balanced``: per-class quotas by predicted class, any strategy ranking within each class.

Class imbalance starves rare classes of labels: an uncertainty strategy keeps picking where the
common classes meet. The wrapper splits the batch into per-class quotas by the model's predicted
class (``argmax`` of its probabilities), ``uniform`` or ``inverse`` (proportional to
``1 / (labeled items of the class + 1)``: rarer classes get more), fills each quota with the
wrapped strategy run on the candidates predicted as that class, and hands a quota a class cannot
fill (too few candidates predicted as it) to the others. The picks are ranked round-robin over
the classes (each class's first pick, then each one's second, ...), so the top of a Label
Studio view is balanced too.

Project file::

    [strategy]
    name = "balanced"
    params = { strategy = "margin", quotas = "inverse" }
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from alloop.errors import ConfigError
from alloop.strategies.base import Selection, SelectionContext, Strategy

__all__ = ["BalancedStrategy", "quotas"]


def quotas(k: int, weights: NDArray[Any], available: NDArray[Any]) -> NDArray[np.int64]:
    """Split ``k`` over classes in proportion to ``weights`` (largest remainders, ties to the
    lower class), never above ``available``; what a class cannot take goes to the others."""
    w = np.asarray(weights, dtype=np.float64).copy()
    avail = np.asarray(available, dtype=np.int64)
    if k > int(avail.sum()):
        raise ValueError(f"cannot split {k} picks over {int(avail.sum())} candidates")
    out = np.zeros(len(w), np.int64)
    left = k
    open_ = (avail > 0) & (w > 0)
    if not open_.any():
        open_ = avail > 0
        w = np.ones(len(w))
    while left > 0:
        share = np.where(open_, w, 0.0)
        share = share / share.sum() * left
        base = np.floor(share).astype(np.int64)
        rest = left - int(base.sum())
        order = np.lexsort((np.arange(len(w)), -(share - base)))  # largest remainder first
        for c in order[:rest]:
            base[c] += 1
        take = np.minimum(base, avail - out)
        out += take
        left -= int(take.sum())
        open_ &= out < avail
        if left > 0 and not open_.any():
            open_ = out < avail
            w = np.ones(len(w))
    return out


class BalancedStrategy(Strategy):
    """Fill per-class quotas by predicted class, ranking within a class with ``strategy``.

    Parameters
    ----------
    strategy : str
        The wrapped strategy's name (any registered one that does not select objects).
    strategy_params : dict
        Its parameters.
    quotas : {"uniform", "inverse"}
        ``uniform``: the same share for every class; ``inverse``: shares proportional to
        ``1 / (labeled items of the class + 1)``.
    """

    name: ClassVar[str] = "balanced"
    requires: ClassVar[frozenset[str]] = frozenset({"proba", "labels"})

    strategy: str = "margin"
    strategy_params: dict[str, Any] = Field(default_factory=dict)
    quotas: Literal["uniform", "inverse"] = "uniform"

    @model_validator(mode="after")
    def _check_inner(self) -> BalancedStrategy:
        inner = self.inner()
        if "objects" in inner.requires or isinstance(inner, BalancedStrategy):
            raise ConfigError(f"balanced cannot wrap {self.strategy!r}: it needs a strategy that ranks items "
                              "(margin, entropy, coreset, badge, ...).")
        object.__setattr__(self, "requires", frozenset(inner.requires | {"proba", "labels"}))
        object.__setattr__(self, "uses_backend", inner.uses_backend)
        return self

    def inner(self) -> Strategy:
        from alloop import registry

        out: Strategy = registry.create("strategy", self.strategy, self.strategy_params)
        return out

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        proba = np.asarray(ctx.require("proba"))
        labels = np.asarray(ctx.require("labels"))
        n_classes = proba.shape[1]
        pred = np.argmax(proba[ctx.candidates], axis=1)
        available = np.bincount(pred, minlength=n_classes)
        if self.quotas == "inverse":
            have = np.bincount(labels[labels >= 0], minlength=n_classes)[:n_classes]
            weights = 1.0 / (have + 1.0)
        else:
            weights = np.ones(n_classes)
        q = quotas(k, weights, available)
        inner = self.inner()
        per_class: list[tuple[NDArray[np.int64], NDArray[np.float64]]] = []
        for c in range(n_classes):
            if q[c] == 0:
                continue
            sub = replace(ctx, candidates=ctx.candidates[pred == c])
            sel = inner.select(sub, int(q[c]))
            per_class.append((sel.positions, sel.scores))
        depth = max(len(p) for p, _ in per_class)
        positions = [p[i] for i in range(depth) for p, _ in per_class if i < len(p)]
        scores = [s[i] for i in range(depth) for p, s in per_class if i < len(p)]
        return Selection(positions=np.array(positions, np.int64), scores=np.array(scores, np.float64))
