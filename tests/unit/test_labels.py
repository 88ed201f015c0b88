from __future__ import annotations

from datetime import datetime, timedelta

from alloop.labels import Vote, aggregate

T0 = datetime(2026, 1, 1)


def v(sample, who, label, minutes):
    return Vote(sample, who, label, T0 + timedelta(minutes=minutes))


def test_latest_per_annotator_counts_once():
    # ana changed her mind: only her latest counts, so bob + carl's "dog" wins 2:1
    votes = [v(1, "ana", "cat", 0), v(1, "ana", "dog", 5), v(1, "bob", "cat", 1), v(1, "carl", "cat", 2)]
    assert aggregate(votes, "majority") == {1: "cat"}
    votes = [v(1, "ana", "cat", 0), v(1, "ana", "dog", 5), v(1, "bob", "dog", 1), v(1, "carl", "cat", 2)]
    assert aggregate(votes, "majority") == {1: "dog"}


def test_majority_tie_goes_to_most_recent():
    votes = [v(1, "ana", "cat", 0), v(1, "bob", "dog", 3)]
    assert aggregate(votes, "majority") == {1: "dog"}
    votes = [v(1, "ana", "cat", 4), v(1, "bob", "dog", 3)]
    assert aggregate(votes, "majority") == {1: "cat"}


def test_latest_rule():
    votes = [v(1, "ana", "cat", 0), v(1, "bob", "cat", 1), v(1, "carl", "dog", 9), v(2, "ana", "x", 0)]
    assert aggregate(votes, "latest") == {1: "dog", 2: "x"}
    assert aggregate(votes, "majority") == {1: "cat", 2: "x"}


def test_aggregators_are_plugins():
    import pytest

    from alloop import registry
    from alloop.errors import UnknownComponentError

    assert {"majority", "latest"} <= set(registry.available("aggregator"))
    votes = [v(1, "ana", "cat", 0), v(1, "bob", "dog", 1), v(1, "carl", "dog", 2)]
    assert aggregate(votes, lambda vs: min(x.label for x in vs)) == {1: "cat"}
    with pytest.raises(UnknownComponentError, match="Known aggregators: latest, majority"):
        aggregate(votes, "median")
