"""What every plugin is told about the project it serves, when it is built.

Every plugin - strategy, learner, encoder, teacher, connector - is built the same way::

    Plugin.from_params(params, context=PluginContext(...))

``params`` are the plugin's own parameters from the project file (validated by the plugin,
raising :class:`~alloop.errors.ConfigError`); ``context`` is what alloop knows. Kinds that need
more get a subclass (:class:`~alloop.protocols.connector.ConnectorContext`,
:class:`~alloop.protocols.teacher.TeacherContext`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["PluginContext"]


@dataclass(frozen=True)
class PluginContext:
    """The project a plugin serves.

    Attributes
    ----------
    project : str
        The project's name.
    task : str
        ``"classification"``, ``"text"`` or ``"detection"``.
    labels : tuple of str
        The label set (empty before the first import found it).
    work_dir : Path
        The project's folder for files (models, caches, hand-offs).
    seed : int
        The project seed (plugins derive their randomness from it, never from global state).
    """

    project: str = "project"
    task: str = "classification"
    labels: tuple[str, ...] = ()
    work_dir: Path = Path(".")
    seed: int = 0
