"""The ``[serve]`` schedule as APScheduler triggers: an interval, or a cron expression.

APScheduler 3 numbers the days of the week from Monday = 0, unlike cron (Sunday = 0), so a
numeric day-of-week field would silently fire on the wrong day: names (``mon-fri``, ``sun``)
are required there.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alloop.config import ServeConfig


def check_cron(expr: str, timezone: str | None = None) -> None:
    """Raise ``ValueError`` (with the way out) if ``expr`` is not a usable cron expression."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"expected 5 fields (minute hour day month day-of-week), got {len(fields)} in {expr!r}; "
            'e.g. "*/10 * * * *" (every 10 minutes) or "0 7 * * mon-fri"'
        )
    if re.search(r"\d", fields[4]):
        raise ValueError(
            f"write the day-of-week field with names (mon, tue, ..., sun; e.g. mon-fri), not numbers: {fields[4]!r} "
            "(APScheduler counts Monday as 0, cron counts Sunday as 0)"
        )
    try:
        CronTrigger.from_crontab(expr, timezone=timezone or "UTC")
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from None


def make_trigger(cfg: "ServeConfig") -> Any:
    """The APScheduler trigger of a ``[serve]`` section."""
    if cfg.cron is not None:
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger.from_crontab(cfg.cron, timezone=cfg.timezone)
    from apscheduler.triggers.interval import IntervalTrigger

    return IntervalTrigger(seconds=cfg.every_s)


def describe(cfg: "ServeConfig") -> str:
    """A short human description: ``every 300 s`` or ``cron "*/10 * * * *"``."""
    if cfg.cron is not None:
        tz = f" {cfg.timezone}" if cfg.timezone else ""
        return f'cron "{cfg.cron}"{tz}'
    every = cfg.every_s
    return f"every {every:g} s"
