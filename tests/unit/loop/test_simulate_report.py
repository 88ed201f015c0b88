"""What labels buy, and where stopping rules stop: the simulate report against hand-computed runs."""

from __future__ import annotations

import pytest

from alloop.simulate import RunResult, SimulationResult, SimulationSpec


def run(strategy, seed, acc, n=None, stop=()):
    n = n or [10 * (i + 1) for i in range(len(acc))]
    return RunResult(strategy, seed, n, acc, 0.0, 0.0, list(stop))


def result(*runs):
    return SimulationResult(SimulationSpec(strategies=(), seeds=()), list(runs))


def test_labels_saved_pairs_each_seed_with_random():
    res = result(
        run("random", 0, [0.5, 0.6, 0.7, 0.8]),      # target 0.8 at 40 labels
        run("random", 1, [0.5, 0.6, 0.7, 0.75]),     # target 0.75 at 40
        run("random", 2, [0.5, 0.6, 0.7, 0.9]),      # target 0.9 at 40
        run("margin", 0, [0.6, 0.8, 0.85, 0.9]),     # reaches 0.8 at 20: saves 20
        run("margin", 1, [0.5, 0.7, 0.76, 0.8]),     # reaches 0.75 at 30: saves 10
        run("margin", 2, [0.5, 0.6, 0.7, 0.85]),     # never reaches 0.9
    )
    (row,) = res.labels_saved()
    assert (row["strategy"], row["reached"], row["not_reached"], row["paired_seeds"]) == ("margin", 2, 1, 3)
    assert row["saved_mean"] == 15.0
    # t-interval over (20, 10): mean 15, sd 7.07, t(0.975, 1) = 12.706
    assert row["saved_low"] == pytest.approx(15 - 12.7062 * 7.0711 / 2 ** 0.5, abs=1e-2)
    assert row["saved_high"] == pytest.approx(15 + 12.7062 * 7.0711 / 2 ** 0.5, abs=1e-2)


def test_without_random_nothing_is_paired():
    assert result(run("margin", 0, [0.5, 0.6])).labels_saved() == []


def test_stopping_table_finds_where_each_rule_first_fires():
    k = [{}, {"stop_kappa": 0.9, "stop_uncertainty": 0.3}, {"stop_kappa": 0.995, "stop_uncertainty": 0.1},
         {"stop_kappa": 0.999, "stop_uncertainty": 0.04}, {"stop_kappa": 1.0, "stop_uncertainty": 0.03},
         {"stop_kappa": 1.0, "stop_uncertainty": 0.02}]
    acc = [0.5, 0.7, 0.8, 0.85, 0.86, 0.88]
    res = result(run("margin", 0, acc, stop=k), run("margin", 1, acc, stop=k[:3] + [{"stop_kappa": 0.5}] * 3))
    rows = {r["rule"].split(" (")[0]: r for r in res.stopping_table()}
    stable = rows["stabilizing predictions"]
    # seed 0: windows (0.9, 0.995, 0.999) = 0.98 < 0.99; (0.995, 0.999, 1.0) >= 0.99 at the 5th point
    assert (stable["fired"], stable["labels_mean"], stable["accuracy_mean"]) == (1, 50, 0.86)
    assert stable["given_up_mean"] == pytest.approx(0.02)
    unc = rows["overall uncertainty"]
    assert (unc["fired"], unc["labels_mean"]) == (1, 40)
