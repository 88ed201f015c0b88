"""Explicit randomness: every stochastic step gets a Generator derived from named parts.

``derive_rng(seed, "round", 3, "select")`` is the same in every process and after every
restart, which is what makes a killed-and-resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _word(part: object) -> int:
    if isinstance(part, (int, np.integer)) and not isinstance(part, bool) and part >= 0:
        return int(part)
    digest = hashlib.sha256(repr(part).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def derive_seed(seed: int, *parts: object) -> int:
    """A 32-bit seed derived from ``seed`` and the parts (for libraries that take an int)."""
    ss = np.random.SeedSequence([_word(seed), *(_word(p) for p in parts)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def derive_rng(seed: int, *parts: object) -> np.random.Generator:
    """A Generator for (``seed``, ``parts``); independent streams for different parts."""
    return np.random.default_rng(np.random.SeedSequence([_word(seed), *(_word(p) for p in parts)]))
