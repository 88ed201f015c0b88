"""What the root command decided for this process (read by the commands)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CliState:
    debug: bool = False
    """--debug: let unexpected errors raise with their traceback."""
    log_level_chosen: bool = False
    """-v, -q, --debug or $ALLOOP_LOG_LEVEL chose the log level."""


STATE = CliState()
