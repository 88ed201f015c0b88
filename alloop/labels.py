"""From every annotation kept to one training label per sample.

Rules (one annotator):  the latest non-cancelled, valid annotation of each (sample, annotator)
counts; an updated annotation replaces the older one because it *is* the same row (same
source id), re-ingested. A cancelled (skipped) annotation is not a label.

Across annotators (pluggable through the ``alloop.aggregators`` entry-point group: a function
from the votes of one sample to its label): ``majority`` vote, ties broken by the most recent
vote; ``latest``: the most recent annotation wins.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import NamedTuple


class Vote(NamedTuple):
    sample_id: int
    annotator: str
    label: str
    updated_at: datetime


def _latest_per_annotator(votes: Iterable[Vote]) -> dict[int, list[Vote]]:
    best: dict[tuple[int, str], Vote] = {}
    for v in votes:
        key = (v.sample_id, v.annotator)
        if key not in best or v.updated_at > best[key].updated_at:
            best[key] = v
    per_sample: dict[int, list[Vote]] = defaultdict(list)
    for v in best.values():
        per_sample[v.sample_id].append(v)
    return per_sample


def majority(votes: list[Vote]) -> str:
    if len(votes) == 1:  # one annotator (the common case): its vote
        return votes[0].label
    counts = Counter(v.label for v in votes)
    top = max(counts.values())
    tied = {label for label, c in counts.items() if c == top}
    # most recent vote among the tied labels wins
    return max((v for v in votes if v.label in tied), key=lambda v: v.updated_at).label


def latest(votes: list[Vote]) -> str:
    return max(votes, key=lambda v: v.updated_at).label


def aggregate(votes: Iterable[Vote], rule: str | Callable[[list[Vote]], str] = "majority") -> dict[int, str]:
    """Training label per sample id from valid, non-cancelled votes.

    ``rule`` is a registered aggregator name or the function itself.
    """
    fn: Callable[[list[Vote]], str]
    if isinstance(rule, str):
        from alloop import registry

        fn = registry.load("aggregator", rule)
    else:
        fn = rule
    return {sid: fn(vs) for sid, vs in _latest_per_annotator(votes).items()}
