"""The exceptions alloop raises.

Every error derives from :class:`AlloopError` *and* from the builtin that fits,
so ``except ValueError`` keeps working for code that does not know alloop::

    AlloopError
    ├── ConfigError (ValueError)            a project file or parameter is wrong
    ├── InvalidInputError (ValueError)      a bad array handed to a kernel (NaN scores from a model...)
    ├── UnknownComponentError (LookupError) no strategy/learner/... by that name
    ├── PoolError (ValueError)
    │   ├── PoolImportError                 a source could not be imported (duplicates, bad file)
    │   ├── EmptyPoolError                  nothing to select from / nothing imported
    │   └── PoolExhaustedError              budget larger than the unlabeled pool
    ├── StoreError (RuntimeError)
    │   ├── ProjectNotFoundError (LookupError)
    │   ├── InvalidTransitionError          a round moved out of order
    │   └── LockedError                     another process advances this project
    ├── LearnerError (RuntimeError)         a model could not be trained / used
    │   └── NotFittedError (AttributeError)
    ├── SampleDecodeError (ValueError)      an item cannot be read (corrupt image ...)
    ├── ExecutionError (RuntimeError)       the execution backend (Ray) failed: a worker died too often
    │   └── ExecutionUnavailableError (ConnectionError)   the cluster cannot be reached
    └── ConnectorError (RuntimeError)       the labeling tool failed
        ├── ConnectorAuthError (PermissionError)
        ├── ConnectorUnavailableError (ConnectionError)
        └── ConnectorDataError (ValueError)

Messages say what was expected, what was got, and how to fix it.
Exceptions carry their data as attributes so callers need not parse text.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class AlloopError(Exception):
    """Root of every error raised by alloop."""


class ConfigError(AlloopError, ValueError):
    """A project file, CLI option or component parameter is invalid."""


class InvalidInputError(AlloopError, ValueError):
    """An array or argument handed to a kernel is unusable (wrong shape, NaN, out of range).

    Distinct from :class:`ConfigError`: the data came from a model, an encoder or code, not
    from the project file, so the loop counts it as a failed attempt of the step.
    """


class UnknownComponentError(AlloopError, LookupError):
    """No component of ``kind`` is registered under ``name``."""

    def __init__(self, kind: str, name: str, available: Sequence[str]) -> None:
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        hint = difflib.get_close_matches(name, self.available, n=1)
        plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
        msg = f"Unknown {kind} {name!r}. Known {plural}: {', '.join(self.available) or '(none)'}."
        if hint:
            msg += f" Did you mean {hint[0]!r}?"
        super().__init__(msg)


class PoolError(AlloopError, ValueError):
    """Something is wrong with the pool of samples."""


class PoolImportError(PoolError):
    """A pool source could not be imported; nothing was written."""


class EmptyPoolError(PoolError):
    """The pool (or the candidate set) is empty."""


class PoolExhaustedError(PoolError):
    """More samples were requested than there are unlabeled candidates."""

    def __init__(self, requested: int, available: int, hint: str = "") -> None:
        self.requested = requested
        self.available = available
        msg = (
            f"Asked to select {requested} samples but only {available} unlabeled samples "
            f"remain in the pool."
        )
        msg += " " + (hint or f"Lower the batch size to at most {available} or import more samples.")
        super().__init__(msg)


class StoreError(AlloopError, RuntimeError):
    """The project database is missing, locked or inconsistent."""


class ProjectNotFoundError(StoreError, LookupError):
    """No project of that name in the database."""


class InvalidTransitionError(StoreError):
    """A round was asked to move to a state it cannot reach from its current one."""

    def __init__(self, round_number: int, current: str, attempted: str) -> None:
        self.round_number = round_number
        self.current = current
        self.attempted = attempted
        super().__init__(
            f"Round {round_number} cannot move from {current} to {attempted}."
        )


class LockedError(StoreError):
    """Another live process holds the project lock."""

    def __init__(self, project: str, owner: str) -> None:
        self.project = project
        self.owner = owner
        super().__init__(
            f"Project {project!r} is being advanced by another process ({owner}). "
            "Wait for it to finish, or stop it; a dead holder's lock is taken over automatically."
        )


class LearnerError(AlloopError, RuntimeError):
    """A learner could not be trained or used."""


class NotFittedError(LearnerError, AttributeError):
    """A learner was used before ``fit``."""


class SampleDecodeError(AlloopError, ValueError):
    """A sample's content cannot be read (unreadable file, corrupt image...)."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"Cannot read sample {key!r}: {reason}")


class ExecutionError(AlloopError, RuntimeError):
    """The execution backend failed outside the user's code: Ray is missing, a worker died more
    often than ``[execution] max_retries`` allows, the cluster lost a node or an object."""


class ExecutionUnavailableError(ExecutionError, ConnectionError):
    """The Ray cluster named by ``[execution] address`` cannot be reached (nothing was run)."""

    def __init__(self, address: str, reason: str, hint: str = "") -> None:
        self.address = address
        self.reason = reason
        super().__init__(
            f"Cannot reach the Ray cluster at {address!r} ([execution] address in alloop.toml): {reason}. "
            + (hint or "Start the cluster (`ray start --head` on the head node), check the host and port, "
               "or set [execution] backend = \"local\".")
        )


class ConnectorError(AlloopError, RuntimeError):
    """The labeling tool failed or answered something unexpected."""


class ConnectorAuthError(ConnectorError, PermissionError):
    """The labeling tool refused our credentials."""


class ConnectorUnavailableError(ConnectorError, ConnectionError):
    """The labeling tool cannot be reached (down, timing out, 5xx)."""


class ConnectorDataError(ConnectorError, ValueError):
    """The labeling tool returned data alloop cannot use."""


def format_list(items: Iterable[object], limit: int = 5) -> str:
    """Render the first ``limit`` items of a list for an error message."""
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items) - limit} more)"
    return shown
