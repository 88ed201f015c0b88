"""Given items first: seed a round (usually round 0) with samples you choose by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from alloop.errors import ConfigError, format_list
from alloop.strategies.base import Selection, SelectionContext, Strategy


class GivenStrategy(Strategy):
    """Pick the listed sample keys (in order), then fill the batch at random.

    For a cold start that must contain known items — one example per class, a customer's
    hand-picked hard cases — set ``cold_start = { name = "given", params = { keys = [...] } }``
    or ``path`` to a file with one key per line. Keys already labeled or selected are skipped;
    keys not in the pool are an error naming them. Scores: 1 for given items, 0 for fillers.
    """

    name: ClassVar[str] = "given"
    requires: ClassVar[frozenset[str]] = frozenset({"keys"})

    keys: tuple[str, ...] = ()
    path: Path | None = None

    def _wanted(self) -> list[str]:
        keys = list(self.keys)
        if self.path is not None:
            try:
                lines = Path(self.path).read_text(encoding="utf-8").splitlines()
                keys += [line.strip() for line in lines if line.strip()]
            except OSError as exc:
                raise ConfigError(f"Cannot read the keys file of strategy 'given' ({self.path}): {exc}.") from None
        return keys

    def _select(self, ctx: SelectionContext, k: int) -> Selection:
        wanted = self._wanted()
        if wanted and ctx.keys is None:
            raise ConfigError("Strategy 'given' needs the sample keys in its context.")
        position = {str(key): i for i, key in enumerate(ctx.keys)} if ctx.keys is not None else {}
        unknown = [key for key in wanted if key not in position]
        if unknown:
            raise ConfigError(
                f"Strategy 'given' lists {len(unknown)} keys that are not in the pool: {format_list(unknown)}."
            )
        open_ = set(ctx.candidates.tolist())
        picks: list[int] = []
        for key in wanted:
            pos = position[key]
            if pos in open_ and pos not in picks and len(picks) < k:
                picks.append(pos)
        rest = np.setdiff1d(ctx.candidates, np.array(picks, dtype=np.int64))
        fill: NDArray[Any] | list[int] = (
            ctx.rng.choice(rest, size=k - len(picks), replace=False) if k > len(picks) else []
        )
        scores = [1.0] * len(picks) + [0.0] * (k - len(picks))
        return Selection(positions=np.array(picks + list(fill), dtype=np.int64), scores=np.array(scores))
