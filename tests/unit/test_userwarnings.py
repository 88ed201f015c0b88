"""Warnings from user code: each distinct one reported once per run, with where it first appeared."""

from __future__ import annotations

import logging
import threading
import warnings

import pytest

from alloop.userwarnings import SeenWarning, WarningLog, collecting


def _noisy(n: int, message: str = "this estimator is deprecated") -> None:
    for _ in range(n):
        with warnings.catch_warnings():  # what scikit-learn does inside: resets Python's once-per-location memory
            pass
        warnings.warn(message, FutureWarning, stacklevel=1)


def test_each_distinct_warning_is_reported_once_with_where_it_first_appeared(caplog):
    caplog.set_level(logging.WARNING, logger="alloop.userwarnings")
    log = WarningLog()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        with collecting(log, "round 1, training"):
            _noisy(50)
        with collecting(log, "round 2, training"):
            _noisy(50)
            _noisy(3, "another message")
    assert [(w.category, w.message, w.where) for w in log.seen] == [
        ("FutureWarning", "this estimator is deprecated", "round 1, training"),
        ("FutureWarning", "another message", "round 2, training"),
    ]
    records = [r.getMessage() for r in caplog.records]
    assert len(records) == 2
    assert records[0].startswith(
        "FutureWarning (first seen in round 1, training; shown once): this estimator is deprecated")
    assert "test_userwarnings.py:" in records[0]  # the line that warned


def test_outside_the_block_warnings_are_shown_as_usual():
    log = WarningLog()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with collecting(log, "round 0, training"):
            pass
        _noisy(2)
    assert len(shown) == 2 and log.seen == []


def test_filters_still_apply_first():
    log = WarningLog()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        with pytest.raises(FutureWarning), collecting(log, "round 0, scoring"):
            _noisy(1)
        warnings.simplefilter("ignore", FutureWarning)
        with collecting(log, "round 0, scoring"):
            _noisy(1)
    assert log.seen == []


def test_a_collecting_log_reports_nothing_and_a_parent_merges(caplog):
    caplog.set_level(logging.WARNING, logger="alloop.userwarnings")
    workers = [WarningLog(report=False) for _ in range(3)]
    for i, w in enumerate(workers):
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            with collecting(w, f"seed {i}"):
                _noisy(10)
    assert caplog.records == []
    parent = WarningLog()
    for w in workers:
        parent.merge(w.seen)
    assert [w.where for w in parent.seen] == ["seed 0"] and len(caplog.records) == 1


def test_threads_report_to_their_own_logs():
    logs = {name: WarningLog(report=False) for name in ("a", "b")}
    ready = threading.Barrier(2)

    def work(name: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            with collecting(logs[name], f"project {name}"):
                ready.wait(timeout=30)
                _noisy(5, f"from {name}")

    threads = [threading.Thread(target=work, args=(n,)) for n in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [w.message for w in logs["a"].seen] == ["from a"]
    assert [w.message for w in logs["b"].seen] == ["from b"]


def test_seen_warning_key():
    w = SeenWarning("UserWarning", "m", "round 1", "f.py:3")
    assert w.key == ("UserWarning", "m")
