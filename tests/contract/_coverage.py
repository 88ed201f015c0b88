"""What every contract suite checks first: the built-ins are registered, every plugin has a harness."""

from __future__ import annotations

from collections.abc import Collection, Iterable


def assert_builtins_registered(kind: str, registered: Iterable[str], builtins: Collection[str]) -> None:
    """Fail when a built-in plugin of ``kind`` is missing from the entry points."""
    missing = sorted(set(builtins) - set(registered))
    assert not missing, f"missing built-in {kind}s: {missing} (is alloop installed with its entry points?)"


def assert_every_plugin_has_a_harness(kind: str, registered: Iterable[str], harnesses: Collection[str]) -> None:
    """Fail when a registered plugin of ``kind`` has no harness: it would go untested."""
    missing = sorted(set(registered) - set(harnesses))
    assert not missing, f"registered {kind}s without a harness in tests/contract/test_{kind}s_contract.py: {missing}"
